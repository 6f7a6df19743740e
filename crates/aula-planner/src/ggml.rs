//! ggml tensor types: block size (elements) and bytes per block, as in
//! ggml's `type_traits` table, so weights can be summed exactly tensor by
//! tensor from a GGUF's tensor table.

/// (type id, name, elements per block, bytes per block)
const TYPES: &[(u32, &str, u64, u64)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 36),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
    (40, "NVFP4", 64, 36),
    (41, "Q1_0", 128, 18),
    (42, "Q2_0", 64, 18),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GgmlType {
    pub id: u32,
    pub name: &'static str,
    pub block: u64,
    pub block_bytes: u64,
}

impl GgmlType {
    pub fn from_id(id: u32) -> Option<GgmlType> {
        TYPES
            .iter()
            .find(|t| t.0 == id)
            .map(|&(id, name, block, block_bytes)| GgmlType {
                id,
                name,
                block,
                block_bytes,
            })
    }

    pub fn from_name(name: &str) -> Option<GgmlType> {
        TYPES.iter().find(|t| t.1.eq_ignore_ascii_case(name)).map(
            |&(id, name, block, block_bytes)| GgmlType {
                id,
                name,
                block,
                block_bytes,
            },
        )
    }

    /// Bytes of a tensor of `elements` values (rows are whole blocks).
    /// Bytes of `elements` values (saturating: a corrupt file's sizes
    /// never wrap around to something small).
    pub fn bytes_for(&self, elements: u64) -> u64 {
        elements
            .div_ceil(self.block)
            .saturating_mul(self.block_bytes)
    }

    pub fn bits_per_weight(&self) -> f64 {
        self.block_bytes as f64 * 8.0 / self.block as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_sizes() {
        assert_eq!(
            GgmlType::from_name("q4_k").map(|t| t.bits_per_weight()),
            Some(4.5)
        );
        assert_eq!(
            GgmlType::from_name("Q8_0").map(|t| t.bits_per_weight()),
            Some(8.5)
        );
        assert_eq!(
            GgmlType::from_name("Q4_0").map(|t| t.bits_per_weight()),
            Some(4.5)
        );
        assert_eq!(
            GgmlType::from_name("Q6_K").map(|t| t.bits_per_weight()),
            Some(6.5625)
        );
        assert_eq!(GgmlType::from_id(30).map(|t| t.name), Some("BF16"));
        assert_eq!(GgmlType::from_id(4), None);
        assert_eq!(
            GgmlType::from_name("F16").map(|t| t.bytes_for(10)),
            Some(20)
        );
    }
}
