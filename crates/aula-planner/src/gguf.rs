//! Reading a GGUF file's header, metadata and tensor table — no weights, no
//! model load — so a plan can be made for any GGUF before loading it, and
//! weights summed exactly from each tensor's shape and quantization type.

use crate::ggml::GgmlType;
use std::collections::BTreeMap;
use std::io::{BufReader, Read};
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Uint(u64),
    Float(f64),
    Bool(bool),
    Str(String),
    /// Arrays keep their length; their items only when short (token lists are long).
    Array {
        len: u64,
        items: Vec<Value>,
    },
}

impl Value {
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Uint(u) => Some(*u),
            Value::Int(i) if *i >= 0 => Some(*i as u64),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Uint(u) => Some(*u as f64),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
}

impl TensorInfo {
    /// The number of values (saturating; the reader refuses tensors whose
    /// size does not fit the file, so this is exact for a file it read).
    pub fn elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |n, d| n.saturating_mul(*d))
    }
    pub fn bytes(&self) -> u64 {
        self.ggml_type.bytes_for(self.elements())
    }
}

#[derive(Debug, Clone)]
pub struct GgufFile {
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    pub file_size: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct GgufError {
    pub path: String,
    pub message: String,
}

const SHORT_ARRAY: u64 = 4096;

struct Reader<R: Read> {
    r: R,
    pos: u64,
    len: u64,
}

impl<R: Read> Reader<R> {
    fn bytes(&mut self, n: u64, what: &str) -> Result<Vec<u8>, String> {
        if n > self.len.saturating_sub(self.pos) {
            return Err(format!(
                "truncated or corrupt: {what} at byte {} claims {n} bytes, beyond the end of the file",
                self.pos
            ));
        }
        let mut buf = vec![0u8; n as usize];
        self.r
            .read_exact(&mut buf)
            .map_err(|e| format!("truncated: reading {what} at byte {}: {e}", self.pos))?;
        self.pos += n;
        Ok(buf)
    }
    fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let v = self.bytes(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(&v);
        Ok(a)
    }
    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }
    fn string(&mut self, what: &str) -> Result<String, String> {
        let n = self.u64(what)?;
        let b = self.bytes(n, what)?;
        String::from_utf8(b)
            .map_err(|_| format!("corrupt: {what} at byte {} is not UTF-8", self.pos))
    }
    fn value(&mut self, ty: u32, key: &str, depth: u32) -> Result<Value, String> {
        Ok(match ty {
            0 => Value::Uint(u64::from(self.arr::<1>(key)?[0])),
            1 => Value::Int(i64::from(self.arr::<1>(key)?[0] as i8)),
            2 => Value::Uint(u64::from(u16::from_le_bytes(self.arr(key)?))),
            3 => Value::Int(i64::from(i16::from_le_bytes(self.arr(key)?))),
            4 => Value::Uint(u64::from(self.u32(key)?)),
            5 => Value::Int(i64::from(i32::from_le_bytes(self.arr(key)?))),
            6 => Value::Float(f64::from(f32::from_le_bytes(self.arr(key)?))),
            7 => Value::Bool(self.arr::<1>(key)?[0] != 0),
            8 => Value::Str(self.string(key)?),
            9 => {
                if depth > 2 {
                    return Err(format!("corrupt: nested arrays too deep in `{key}`"));
                }
                let item_ty = self.u32(key)?;
                let len = self.u64(key)?;
                if len > self.len.saturating_sub(self.pos) {
                    return Err(format!(
                        "truncated or corrupt: array `{key}` claims {len} items, more than the file holds"
                    ));
                }
                let mut items = Vec::new();
                for i in 0..len {
                    let v = self.value(item_ty, key, depth + 1)?;
                    if i < SHORT_ARRAY {
                        items.push(v);
                    }
                }
                if len > SHORT_ARRAY {
                    items.clear();
                }
                Value::Array { len, items }
            }
            10 => Value::Uint(self.u64(key)?),
            11 => Value::Int(i64::from_le_bytes(self.arr(key)?)),
            12 => Value::Float(f64::from_le_bytes(self.arr(key)?)),
            other => return Err(format!("corrupt: unknown value type {other} for `{key}`")),
        })
    }
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<GgufFile, GgufError> {
        let err = |message: String| GgufError {
            path: path.display().to_string(),
            message,
        };
        let f = std::fs::File::open(path).map_err(|e| err(format!("cannot open: {e}")))?;
        let len = f.metadata().map_err(|e| err(e.to_string()))?.len();
        GgufFile::read(BufReader::with_capacity(1 << 20, f), len).map_err(err)
    }

    /// Parse from any reader of a file of `len` bytes.
    pub fn read(r: impl Read, len: u64) -> Result<GgufFile, String> {
        let mut r = Reader { r, pos: 0, len };
        let magic = r
            .arr::<4>("magic")
            .map_err(|_| "not a GGUF file (too short)".to_string())?;
        if &magic != b"GGUF" {
            return Err("not a GGUF file (wrong magic)".into());
        }
        let version = r.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(format!(
                "unsupported GGUF version {version} (2 and 3 are supported)"
            ));
        }
        let n_tensors = r.u64("tensor count")?;
        let n_kv = r.u64("metadata count")?;
        if n_tensors > len / 8 || n_kv > len / 8 {
            return Err(format!(
                "corrupt: header claims {n_tensors} tensors and {n_kv} metadata keys"
            ));
        }
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = r.string("metadata key")?;
            let ty = r.u32(&key)?;
            let v = r.value(ty, &key, 0)?;
            metadata.insert(key, v);
        }
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut data_end = 0u64;
        for _ in 0..n_tensors {
            let name = r.string("tensor name")?;
            let n_dims = r.u32(&name)?;
            if n_dims == 0 || n_dims > 8 {
                return Err(format!("corrupt: tensor `{name}` has {n_dims} dimensions"));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(r.u64(&name)?);
            }
            let ty = r.u32(&name)?;
            let ggml_type = GgmlType::from_id(ty)
                .ok_or_else(|| format!("tensor `{name}` has unknown ggml type {ty}"))?;
            let offset = r.u64(&name)?;
            let elements = dims.iter().try_fold(1u64, |n, d| n.checked_mul(*d));
            if elements.is_none_or(|n| ggml_type.bytes_for(n) > len) {
                return Err(format!(
                    "corrupt: tensor `{name}` has dimensions {dims:?}, more data than the whole file"
                ));
            }
            let t = TensorInfo {
                name,
                dims,
                ggml_type,
            };
            data_end = data_end.max(offset.saturating_add(t.bytes()));
            tensors.push(t);
        }
        // Tensor data starts at the next multiple of general.alignment.
        let align = metadata
            .get("general.alignment")
            .and_then(Value::as_u64)
            .filter(|a| *a > 0)
            .unwrap_or(32);
        let data_start = r.pos.div_ceil(align) * align;
        let needed = data_start.saturating_add(data_end);
        if needed > len {
            return Err(format!(
                "truncated: the tensor table needs {needed} bytes but the file has {len}"
            ));
        }
        Ok(GgufFile {
            version,
            metadata,
            tensors,
            file_size: len,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(Value::as_str)
    }

    /// `{arch}.{suffix}` as an integer.
    pub fn arch_u64(&self, suffix: &str) -> Option<u64> {
        let arch = self.architecture()?;
        self.get(&format!("{arch}.{suffix}"))
            .and_then(Value::as_u64)
    }

    pub fn weight_bytes(&self) -> u64 {
        self.tensors.iter().map(TensorInfo::bytes).sum()
    }

    pub fn parameter_count(&self) -> u64 {
        self.tensors.iter().map(TensorInfo::elements).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(out: &mut Vec<u8>, x: &str) {
        out.extend_from_slice(&(x.len() as u64).to_le_bytes());
        out.extend_from_slice(x.as_bytes());
    }

    fn tiny() -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes()); // tensors
        b.extend_from_slice(&2u64.to_le_bytes()); // kv
        s(&mut b, "general.architecture");
        b.extend_from_slice(&8u32.to_le_bytes());
        s(&mut b, "llama");
        s(&mut b, "llama.block_count");
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&2u32.to_le_bytes());
        s(&mut b, "w");
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&256u64.to_le_bytes());
        b.extend_from_slice(&4u64.to_le_bytes());
        b.extend_from_slice(&12u32.to_le_bytes()); // Q4_K
        b.extend_from_slice(&0u64.to_le_bytes());
        b.resize(b.len().div_ceil(32) * 32 + 4 * 144, 0);
        b
    }

    #[test]
    fn parses_a_small_file() {
        let b = tiny();
        let f = GgufFile::read(&b[..], b.len() as u64).unwrap();
        assert_eq!(f.architecture(), Some("llama"));
        assert_eq!(f.arch_u64("block_count"), Some(2));
        assert_eq!(f.weight_bytes(), 4 * 144);
        assert_eq!(f.parameter_count(), 1024);
    }

    #[test]
    fn corrupt_and_truncated_files_are_errors() {
        let b = tiny();
        for cut in [0, 3, 10, 30, 60, 100, b.len() - 10] {
            let e = GgufFile::read(&b[..cut], cut as u64).unwrap_err();
            assert!(
                e.contains("truncated") || e.contains("not a GGUF"),
                "{cut}: {e}"
            );
        }
        let mut bad = b.clone();
        bad[0] = b'X';
        assert!(
            GgufFile::read(&bad[..], bad.len() as u64)
                .unwrap_err()
                .contains("magic")
        );
        let mut huge = b.clone();
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(
            GgufFile::read(&huge[..], huge.len() as u64)
                .unwrap_err()
                .contains("corrupt")
        );
    }

    /// Found by `scripts/fuzz.sh gguf`: tensor dimensions whose product
    /// overflows u64 panicked (debug) or wrapped to a small size (release).
    #[test]
    fn tensor_sizes_that_overflow_are_corrupt() {
        let found: String = [
            "474755460200000006000000000000000400000000000000000000000000000000000000003a00000000000000000025",
            "000000000047475546000000000000000000000000000000000000000000000000000000000000000000000000000000",
            "000000000000040000000000000000000000000000000000000000000000000000000000000000000000000000000800",
            "0000000420000000000000000000000000fffe0000000000000000000000000000000000000000000000770000000000",
            "fdfdfdfdfdfdfdfdfdfdfd00000000000000000000000200000000000000000000000000000000000000000000000000",
            "000000",
        ]
        .concat();
        let bytes: Vec<u8> = (0..found.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&found[i..i + 2], 16).unwrap())
            .collect();
        assert!(GgufFile::read(&bytes[..], bytes.len() as u64).is_err());
        // The tiny file's tensor made 2^40 x 2^40.
        let mut b = tiny();
        let dims: Vec<u8> = [256u64.to_le_bytes(), 4u64.to_le_bytes()].concat();
        let at = b.windows(16).position(|w| w == dims).unwrap();
        b[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        b[at + 8..at + 16].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let e = GgufFile::read(&b[..], b.len() as u64).unwrap_err();
        assert!(e.contains("corrupt: tensor `w`"), "{e}");
    }
}
