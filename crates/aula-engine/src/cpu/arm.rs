//! Arm (aarch64 Linux): what this CPU offers ggml's Arm variants, read the
//! way ggml's own score reads it (the kernel's `AT_HWCAP`/`AT_HWCAP2` bits,
//! `ggml-feats.h`), and which built variant ggml's rule picks for it.
//!
//! The rule (`ggml-cpu/arch/arm/cpu-feats.cpp`): a variant built with a
//! feature the CPU lacks scores 0; otherwise 1, plus 2 for DOTPROD, 4 for
//! FP16 vector arithmetic, 8 for SVE, 16 for MATMUL_INT8 (i8mm), 32 for
//! SVE2 and 64 for SME; the highest score wins. The variants and the
//! features each is built with are `ggml/src/CMakeLists.txt`'s Linux list.
//! Pure functions, so x86 CI tests them; only [`detect`] reads the host.

use serde::Serialize;

/// The Arm features ggml's variants are built with, as this CPU has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ArmFeatures {
    pub dotprod: bool,
    /// FP16 scalar and vector arithmetic (FPHP and ASIMDHP together).
    pub fp16: bool,
    pub sve: bool,
    pub i8mm: bool,
    pub sve2: bool,
    pub sme: bool,
    /// Not used to choose a variant; said because Armv8.6+ cores have it.
    pub bf16: bool,
}

// linux/arch/arm64/include/uapi/asm/hwcap.h
const HWCAP_FPHP: u64 = 1 << 9;
const HWCAP_ASIMDHP: u64 = 1 << 10;
const HWCAP_ASIMDDP: u64 = 1 << 20;
const HWCAP_SVE: u64 = 1 << 22;
const HWCAP2_SVE2: u64 = 1 << 1;
const HWCAP2_I8MM: u64 = 1 << 13;
const HWCAP2_BF16: u64 = 1 << 14;
const HWCAP2_SME: u64 = 1 << 23;

impl ArmFeatures {
    /// From the kernel's two words of hardware capabilities.
    pub fn from_hwcap(hwcap: u64, hwcap2: u64) -> ArmFeatures {
        ArmFeatures {
            dotprod: hwcap & HWCAP_ASIMDDP != 0,
            fp16: hwcap & HWCAP_FPHP != 0 && hwcap & HWCAP_ASIMDHP != 0,
            sve: hwcap & HWCAP_SVE != 0,
            i8mm: hwcap2 & HWCAP2_I8MM != 0,
            sve2: hwcap2 & HWCAP2_SVE2 != 0,
            sme: hwcap2 & HWCAP2_SME != 0,
            bf16: hwcap2 & HWCAP2_BF16 != 0,
        }
    }

    /// ggml's names of the features present (`DOTPROD`, `SVE`, ...).
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.dotprod, "DOTPROD"),
            (self.fp16, "FP16_VECTOR_ARITHMETIC"),
            (self.sve, "SVE"),
            (self.i8mm, "MATMUL_INT8"),
            (self.sve2, "SVE2"),
            (self.sme, "SME"),
            (self.bf16, "BF16"),
        ]
        .into_iter()
        .filter_map(|(has, name)| has.then_some(name))
        .collect()
    }

    fn has(&self, feature: &str) -> bool {
        match feature {
            "DOTPROD" => self.dotprod,
            "FP16_VECTOR_ARITHMETIC" => self.fp16,
            "SVE" => self.sve,
            "MATMUL_INT8" => self.i8mm,
            "SVE2" => self.sve2,
            "SME" => self.sme,
            _ => false,
        }
    }
}

/// ggml's Linux Arm variants and the features each is built with.
pub const VARIANTS: &[(&str, &[&str])] = &[
    ("armv8.0_1", &[]),
    ("armv8.2_1", &["DOTPROD"]),
    ("armv8.2_2", &["DOTPROD", "FP16_VECTOR_ARITHMETIC"]),
    ("armv8.2_3", &["DOTPROD", "FP16_VECTOR_ARITHMETIC", "SVE"]),
    (
        "armv8.6_1",
        &["DOTPROD", "FP16_VECTOR_ARITHMETIC", "SVE", "MATMUL_INT8"],
    ),
    (
        "armv8.6_2",
        &[
            "DOTPROD",
            "FP16_VECTOR_ARITHMETIC",
            "SVE",
            "MATMUL_INT8",
            "SVE2",
        ],
    ),
    (
        "armv9.2_1",
        &[
            "DOTPROD",
            "FP16_VECTOR_ARITHMETIC",
            "SVE",
            "MATMUL_INT8",
            "SME",
        ],
    ),
    (
        "armv9.2_2",
        &[
            "DOTPROD",
            "FP16_VECTOR_ARITHMETIC",
            "SVE",
            "MATMUL_INT8",
            "SVE2",
            "SME",
        ],
    ),
];

/// ggml's score of a variant built with `built` on a CPU with `f`.
pub fn score(built: &[&str], f: &ArmFeatures) -> i32 {
    let mut score = 1;
    for feature in built {
        if !f.has(feature) {
            return 0;
        }
        score += match *feature {
            "DOTPROD" => 1 << 1,
            "FP16_VECTOR_ARITHMETIC" => 1 << 2,
            "SVE" => 1 << 3,
            "MATMUL_INT8" => 1 << 4,
            "SVE2" => 1 << 5,
            "SME" => 1 << 6,
            _ => 0,
        };
    }
    score
}

/// The variant ggml picks among `built` (names as in [`VARIANTS`]) for a
/// CPU with `f`, and its score.
pub fn expected_variant(built: &[String], f: &ArmFeatures) -> Option<(String, i32)> {
    VARIANTS
        .iter()
        .filter(|(name, _)| built.iter().any(|b| b == name))
        .map(|(name, feats)| (name.to_string(), score(feats, f)))
        .filter(|(_, s)| *s > 0)
        .max_by_key(|(_, s)| *s)
}

/// This CPU's features, from the kernel (None off aarch64 Linux).
pub fn detect() -> Option<ArmFeatures> {
    #[cfg(all(target_arch = "aarch64", target_os = "linux"))]
    {
        // SAFETY: getauxval only reads the process's auxiliary vector.
        let (hwcap, hwcap2) = unsafe {
            (
                libc::getauxval(libc::AT_HWCAP) as u64,
                libc::getauxval(libc::AT_HWCAP2) as u64,
            )
        };
        Some(ArmFeatures::from_hwcap(hwcap, hwcap2))
    }
    #[cfg(not(all(target_arch = "aarch64", target_os = "linux")))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_built() -> Vec<String> {
        VARIANTS.iter().map(|(n, _)| n.to_string()).collect()
    }

    /// HWCAP words as Linux reports them for these cores (the bits above).
    fn cpu(dotprod: bool, fp16: bool, sve: bool, i8mm: bool, sve2: bool, sme: bool) -> ArmFeatures {
        let mut h = 0;
        let mut h2 = 0;
        if dotprod {
            h |= HWCAP_ASIMDDP;
        }
        if fp16 {
            h |= HWCAP_FPHP | HWCAP_ASIMDHP;
        }
        if sve {
            h |= HWCAP_SVE;
        }
        if i8mm {
            h2 |= HWCAP2_I8MM | HWCAP2_BF16;
        }
        if sve2 {
            h2 |= HWCAP2_SVE2;
        }
        if sme {
            h2 |= HWCAP2_SME;
        }
        ArmFeatures::from_hwcap(h, h2)
    }

    #[test]
    fn each_core_gets_the_variant_ggml_scores_highest() {
        let built = all_built();
        let pick = |f: ArmFeatures| expected_variant(&built, &f).unwrap().0;
        // Cortex-A53 (Armv8.0): the baseline.
        assert_eq!(
            pick(cpu(false, false, false, false, false, false)),
            "armv8.0_1"
        );
        // Neoverse-N1 / Cortex-A76 (Armv8.2 with dotprod and fp16).
        assert_eq!(
            pick(cpu(true, true, false, false, false, false)),
            "armv8.2_2"
        );
        // A64FX: SVE and fp16 but no dotprod, so no SVE variant runs on it.
        assert_eq!(
            pick(cpu(false, true, true, false, false, false)),
            "armv8.0_1"
        );
        // Neoverse-V2 (Grace) and Cortex-X925 (GB10): SVE2 and i8mm, no SME.
        assert_eq!(pick(cpu(true, true, true, true, true, false)), "armv8.6_2");
        // QEMU's `max`: everything, SME included.
        assert_eq!(pick(cpu(true, true, true, true, true, true)), "armv9.2_2");
    }

    #[test]
    fn a_missing_feature_scores_zero_and_fp16_needs_both_bits() {
        let n1 = cpu(true, true, false, false, false, false);
        assert_eq!(score(&["DOTPROD", "FP16_VECTOR_ARITHMETIC", "SVE"], &n1), 0);
        assert_eq!(score(&["DOTPROD", "FP16_VECTOR_ARITHMETIC"], &n1), 7);
        assert_eq!(score(&[], &n1), 1);
        // FPHP without ASIMDHP is not ggml's fp16.
        assert!(!ArmFeatures::from_hwcap(HWCAP_FPHP, 0).fp16);
        assert_eq!(
            cpu(true, true, true, true, true, false).names(),
            vec![
                "DOTPROD",
                "FP16_VECTOR_ARITHMETIC",
                "SVE",
                "MATMUL_INT8",
                "SVE2",
                "BF16"
            ]
        );
    }

    #[test]
    fn only_the_variants_built_are_candidates() {
        let grace = cpu(true, true, true, true, true, false);
        let some = vec!["armv8.0_1".to_string(), "armv8.2_2".to_string()];
        assert_eq!(
            expected_variant(&some, &grace),
            Some(("armv8.2_2".to_string(), 7))
        );
        assert_eq!(expected_variant(&[], &grace), None);
        // Not an aarch64 process: nothing detected.
        #[cfg(not(target_arch = "aarch64"))]
        assert!(detect().is_none());
    }
}
