//! The ggml tensor types hearth knows, in one table ([`TensorType::TABLE`]): each type's on-disk
//! id, name, block shape, the candle type that loads it, llama.cpp's file type for a file of that
//! type alone, and hearth's own panel layout for it. The loader, the writer, the kernels' block
//! constants and `hearth quantize` all read these facts here; a new kernel plugs in as a column.

use candle_core::quantized::GgmlDType;

use super::kernels::packed::Kind;

/// A ggml tensor type, by its on-disk id. Only some can be loaded; see [`TensorType::is_supported`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorType(pub u32);

/// What hearth knows of one ggml tensor type: a row of [`TensorType::TABLE`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TypeInfo {
    pub ty: TensorType,
    /// ggml's name, as llama.cpp prints it.
    pub name: &'static str,
    /// Values per block (1 for the plain number types).
    pub block: usize,
    /// Bytes per block.
    pub bytes: usize,
    /// Block-quantized (not a plain float or integer type).
    pub quantized: bool,
    /// The candle type that holds it, for the types hearth can load.
    pub candle: Option<GgmlDType>,
    /// llama.cpp's `general.file_type` for a file of this type alone, where hearth names it so.
    pub file_type: Option<u32>,
    /// hearth's panel layout for its AVX-512 VNNI kernel (`kernels::packed`), where it has one.
    pub packed: Option<Kind>,
}

/// Each row once: `NAME = id: block x bytes, quantized, candle, file type, panel layout;` gives
/// the constant `TensorType::NAME` and the row of `TensorType::TABLE`.
macro_rules! table {
    ($($name:ident = $id:literal: $block:literal x $bytes:literal, $q:literal, $candle:expr, $file:expr, $packed:expr;)*) => {
        impl TensorType {
            $(pub const $name: TensorType = TensorType($id);)*

            /// Every type hearth knows, by id.
            pub const TABLE: &'static [TypeInfo] = &[$(TypeInfo {
                ty: TensorType($id),
                name: stringify!($name),
                block: $block,
                bytes: $bytes,
                quantized: $q,
                candle: $candle,
                file_type: $file,
                packed: $packed,
            }),*];
        }
    };
}

use GgmlDType as G;

// Sizes as ggml's `type_traits` (gguf-py's GGML_QUANT_SIZES); file types as llama.cpp's
// `LLAMA_FTYPE_*`, given only for the types hearth loads.
table! {
    F32     =  0:   1 x   4, false, Some(G::F32),  Some(0),  None;
    F16     =  1:   1 x   2, false, Some(G::F16),  Some(1),  None;
    Q4_0    =  2:  32 x  18, true,  Some(G::Q4_0), Some(2),  Some(Kind::Q4_0);
    Q4_1    =  3:  32 x  20, true,  Some(G::Q4_1), Some(3),  Some(Kind::Q4_1);
    Q5_0    =  6:  32 x  22, true,  Some(G::Q5_0), Some(8),  Some(Kind::Q5_0);
    Q5_1    =  7:  32 x  24, true,  Some(G::Q5_1), Some(9),  None;
    Q8_0    =  8:  32 x  34, true,  Some(G::Q8_0), Some(7),  Some(Kind::Q8_0);
    Q8_1    =  9:  32 x  36, true,  None,          None,     None;
    Q2_K    = 10: 256 x  84, true,  Some(G::Q2K),  Some(10), None;
    Q3_K    = 11: 256 x 110, true,  Some(G::Q3K),  None,     None;
    Q4_K    = 12: 256 x 144, true,  Some(G::Q4K),  None,     Some(Kind::Q4K);
    Q5_K    = 13: 256 x 176, true,  Some(G::Q5K),  None,     Some(Kind::Q5K);
    Q6_K    = 14: 256 x 210, true,  Some(G::Q6K),  Some(18), Some(Kind::Q6K);
    Q8_K    = 15: 256 x 292, true,  None,          None,     None;
    IQ2_XXS = 16: 256 x  66, true,  None,          None,     None;
    IQ2_XS  = 17: 256 x  74, true,  None,          None,     None;
    IQ3_XXS = 18: 256 x  98, true,  None,          None,     None;
    IQ1_S   = 19: 256 x  50, true,  None,          None,     None;
    IQ4_NL  = 20:  32 x  18, true,  None,          None,     None;
    IQ3_S   = 21: 256 x 110, true,  None,          None,     None;
    IQ2_S   = 22: 256 x  82, true,  None,          None,     None;
    IQ4_XS  = 23: 256 x 136, true,  None,          None,     None;
    I8      = 24:   1 x   1, false, None,          None,     None;
    I16     = 25:   1 x   2, false, None,          None,     None;
    I32     = 26:   1 x   4, false, None,          None,     None;
    I64     = 27:   1 x   8, false, None,          None,     None;
    F64     = 28:   1 x   8, false, None,          None,     None;
    IQ1_M   = 29: 256 x  56, true,  None,          None,     None;
    BF16    = 30:   1 x   2, false, Some(G::BF16), Some(32), None;
    TQ1_0   = 34: 256 x  54, true,  None,          None,     None;
    TQ2_0   = 35: 256 x  66, true,  None,          None,     None;
    MXFP4   = 39:  32 x  17, true,  None,          None,     None;
}

/// llama.cpp's `general.file_type` for its mixes of tensor types (`LLAMA_FTYPE_MOSTLY_*`, the
/// files whose layers get different types), with their names; the one-type file types are the
/// table's `file_type` column.
pub const MIXES: [(u32, &str); 7] =
    [(11, "Q3_K_S"), (12, "Q3_K_M"), (13, "Q3_K_L"), (14, "Q4_K_S"), (15, "Q4_K_M"), (16, "Q5_K_S"), (17, "Q5_K_M")];

impl TypeInfo {
    /// The row of a candle type hearth loads.
    pub fn of(dtype: GgmlDType) -> Option<&'static TypeInfo> {
        TensorType::TABLE.iter().find(|t| t.candle == Some(dtype))
    }

    /// The row whose type llama.cpp's `general.file_type` names.
    pub fn of_file_type(file_type: u64) -> Option<&'static TypeInfo> {
        TensorType::TABLE.iter().find(|t| t.file_type.map(u64::from) == Some(file_type))
    }
}

impl TensorType {
    /// This type's row of [`TensorType::TABLE`], or `None` for an id hearth does not know.
    pub const fn info(self) -> Option<&'static TypeInfo> {
        let mut i = 0;
        while i < Self::TABLE.len() {
            if Self::TABLE[i].ty.0 == self.0 {
                return Some(&Self::TABLE[i]);
            }
            i += 1;
        }
        None
    }

    /// The row of a type in the table: for constants such as `TensorType::Q4_0`, where an id
    /// not in the table fails to compile.
    const fn known(self) -> &'static TypeInfo {
        match self.info() {
            Some(info) => info,
            None => panic!("a tensor type not in the table"),
        }
    }

    /// Values per block. Panics for an id not in the table (see [`TensorType::info`]).
    pub const fn block_size(self) -> usize {
        self.known().block
    }

    /// Bytes per block. Panics for an id not in the table (see [`TensorType::info`]).
    pub const fn block_bytes(self) -> usize {
        self.known().bytes
    }

    pub fn name(self) -> &'static str {
        self.info().map_or("unknown", |t| t.name)
    }

    /// The candle type that holds this tensor, for the types hearth can compute with.
    pub fn ggml_dtype(self) -> Option<GgmlDType> {
        self.info().and_then(|t| t.candle)
    }

    pub fn is_supported(self) -> bool {
        self.ggml_dtype().is_some()
    }

    /// The on-disk id of a candle type hearth loads.
    pub fn of(dtype: GgmlDType) -> Self {
        TypeInfo::of(dtype).expect("every candle type hearth loads is in the table").ty
    }

    /// Whether the type is block-quantized (not a plain float or integer type).
    pub fn is_quantized(self) -> bool {
        self.info().is_some_and(|t| t.quantized)
    }
}

impl std::fmt::Display for TensorType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (type id {})", self.name(), self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_agrees_with_candle() {
        let with_candle = TensorType::TABLE.iter().filter_map(|t| t.candle.map(|c| (t, c)));
        // Q8_1 and Q8_K are candle types hearth does not load: checked against candle all the same.
        let extra = [(TensorType::Q8_1, G::Q8_1), (TensorType::Q8_K, G::Q8K)].map(|(t, c)| (t.info().unwrap(), c));
        for (t, c) in with_candle.chain(extra) {
            assert_eq!((t.block, t.bytes), (c.block_size(), c.type_size()), "{}", t.name);
            assert_eq!(t.quantized, c.block_size() > 1, "{}", t.name);
        }
        for t in TensorType::TABLE.iter().filter(|t| t.candle.is_some()) {
            assert_eq!(TensorType::of(t.candle.unwrap()), t.ty, "{}", t.name);
        }
    }

    #[test]
    fn ids_and_names_round_trip() {
        for (i, t) in TensorType::TABLE.iter().enumerate() {
            assert_eq!(t.ty.info(), Some(t), "{}", t.name);
            assert_eq!(t.ty.name(), t.name);
            assert!(TensorType::TABLE[..i].iter().all(|u| u.ty != t.ty && u.name != t.name), "{} twice", t.name);
            assert_eq!(t.block == 1, !t.quantized, "{}", t.name);
            if let Some(f) = t.file_type {
                assert_eq!(TypeInfo::of_file_type(f.into()), Some(t), "file type {f}");
            }
        }
        assert_eq!(TensorType(99).info(), None);
        assert_eq!(TensorType(99).name(), "unknown");
        assert_eq!(TensorType::Q6_K, TensorType(14));
        assert_eq!(TensorType::Q5_0.block_bytes(), 22);
    }

    #[test]
    fn panel_layouts_are_loadable_32_or_256_blocks() {
        for t in TensorType::TABLE.iter().filter(|t| t.packed.is_some()) {
            let want = if t.packed.unwrap().is_k() { crate::model::kernels::kpanels::QK_K } else { crate::model::kernels::QK };
            assert_eq!(t.block, want, "{}", t.name);
            assert!(t.candle.is_some(), "{}", t.name);
        }
    }
}
