//! Checks that a tensor's floats are finite before the model uses them: every block's f16 scales
//! for the quantized types, every value for the float types. A NaN or infinite scale otherwise
//! loads silently and turns every logit into NaN at the first request.

use super::tensor_type::TensorType;

/// Where a block's f16 scales sit (byte offsets), for the block-quantized types hearth loads.
fn f16_scales(ty: TensorType) -> &'static [usize] {
    match ty {
        TensorType::Q4_0 | TensorType::Q5_0 | TensorType::Q8_0 => &[0],
        TensorType::Q4_1 | TensorType::Q5_1 | TensorType::Q4_K | TensorType::Q5_K => &[0, 2],
        TensorType::Q2_K => &[80, 82],
        TensorType::Q3_K => &[108],
        TensorType::Q6_K => &[208],
        _ => &[],
    }
}

/// The index of the first block (for float types, the first value) in `bytes` whose scale or
/// value is NaN or infinite; `None` when all are finite or the type has nothing to check.
pub fn first_non_finite(ty: TensorType, bytes: &[u8]) -> Option<usize> {
    let half = |b: &[u8]| u16::from_le_bytes([b[0], b[1]]);
    match ty {
        TensorType::F32 => bytes.chunks_exact(4).position(|v| !f32::from_le_bytes([v[0], v[1], v[2], v[3]]).is_finite()),
        TensorType::F16 => bytes.chunks_exact(2).position(|v| half(v) & 0x7C00 == 0x7C00),
        TensorType::BF16 => bytes.chunks_exact(2).position(|v| half(v) & 0x7F80 == 0x7F80),
        _ => {
            let scales = f16_scales(ty);
            let size = ty.info().map_or(0, |t| t.bytes);
            if scales.is_empty() || size == 0 {
                return None;
            }
            bytes.chunks_exact(size).position(|block| scales.iter().any(|&at| half(&block[at..]) & 0x7C00 == 0x7C00))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_finite_scale_is_found_in_its_block() {
        for ty in [TensorType::Q4_0, TensorType::Q4_1, TensorType::Q5_0, TensorType::Q5_1, TensorType::Q8_0, TensorType::Q2_K, TensorType::Q3_K, TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K] {
            let size = ty.info().unwrap().bytes;
            // Quantized values of all ones are fine wherever they are not a scale.
            let mut bytes = vec![0xFFu8; size * 3];
            for block in bytes.chunks_exact_mut(size) {
                for &at in f16_scales(ty) {
                    block[at..at + 2].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
                }
            }
            assert_eq!(first_non_finite(ty, &bytes), None, "{}", ty.name());
            let at = size + f16_scales(ty).last().unwrap();
            bytes[at..at + 2].copy_from_slice(&half::f16::NAN.to_le_bytes());
            assert_eq!(first_non_finite(ty, &bytes), Some(1), "{}", ty.name());
            bytes[at..at + 2].copy_from_slice(&half::f16::NEG_INFINITY.to_le_bytes());
            assert_eq!(first_non_finite(ty, &bytes), Some(1), "{}", ty.name());
        }
    }

    #[test]
    fn float_tensors_are_checked_value_by_value() {
        let f32s: Vec<u8> = [1.0f32, -2.0, f32::INFINITY].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(first_non_finite(TensorType::F32, &f32s), Some(2));
        let f16s: Vec<u8> = [half::f16::ONE, half::f16::NAN].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(first_non_finite(TensorType::F16, &f16s), Some(1));
        let bf16s: Vec<u8> = [half::bf16::ONE, half::bf16::MAX].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(first_non_finite(TensorType::BF16, &bf16s), None);
    }
}
