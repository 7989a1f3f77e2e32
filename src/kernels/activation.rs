//! Activations, applied in place to one sample's slice of a layer's output.
//!
//! Formulas are those of FORMAT.md §3.6, written the way the training libraries evaluate them
//! (`exp(x − max)/Σ` for softmax, `1/(1+e^−x)` for sigmoid) so results agree to f32 rounding.

/// An activation with its parameters as slices of the mapped file.
#[derive(Clone, Copy)]
pub enum ActArgs<'a> {
    Identity,
    Relu,
    Sigmoid,
    Tanh,
    LeakyRelu(f32),
    /// One slope (`len 1`) or one per channel.
    PRelu(&'a [f32]),
    /// Dice normalised over the sample's row (FORMAT.md §3.6 code 6).
    DicePerSample {
        alpha: f32,
        eps: f32,
    },
    DiceBn {
        scale: &'a [f32],
        shift: &'a [f32],
        alpha: &'a [f32],
    },
    Softmax,
}

#[inline]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Applies `act` to one sample's outputs of a layer.
pub fn apply_row(act: &ActArgs, row: &mut [f32]) {
    match *act {
        ActArgs::Identity => {}
        // Selects, not `x.max(0.0)` (which turns NaN into 0; torch keeps NaN) and not a
        // conditional store (which compiles to a branch per element): `x < 0 ? 0 : x` becomes
        // one vector max with NaN-propagating operand order.
        ActArgs::Relu => row
            .iter_mut()
            .for_each(|x| *x = if *x < 0.0 { 0.0 } else { *x }),
        ActArgs::Sigmoid => row.iter_mut().for_each(|x| *x = sigmoid(*x)),
        ActArgs::Tanh => row.iter_mut().for_each(|x| *x = x.tanh()),
        ActArgs::LeakyRelu(slope) => row
            .iter_mut()
            .for_each(|x| *x = if *x < 0.0 { *x * slope } else { *x }),
        ActArgs::PRelu(a) if a.len() == 1 => row
            .iter_mut()
            .for_each(|x| *x = if *x < 0.0 { *x * a[0] } else { *x }),
        ActArgs::PRelu(a) => row
            .iter_mut()
            .zip(a)
            .for_each(|(x, &a)| *x = if *x < 0.0 { *x * a } else { *x }),
        ActArgs::DicePerSample { alpha, eps } => {
            let n = row.len() as f32;
            let avg = row.iter().sum::<f32>() / n;
            let var: f32 = row.iter().map(|&x| (x - avg) * (x - avg) + eps).sum();
            let sd = var.sqrt();
            for x in row.iter_mut() {
                let p = sigmoid((*x - avg) / sd);
                *x = p * *x + (1.0 - p) * alpha * *x;
            }
        }
        ActArgs::DiceBn {
            scale,
            shift,
            alpha,
        } => {
            for (j, x) in row.iter_mut().enumerate() {
                let p = sigmoid(*x * scale[j] + shift[j]);
                *x = p * *x + (1.0 - p) * alpha[j] * *x;
            }
        }
        ActArgs::Softmax => softmax(row),
    }
}

/// Numerically stable softmax in place.
pub fn softmax(row: &mut [f32]) {
    // NaN logits give NaN weights, as in torch (f32::max skips NaN, but exp(NaN − max) is NaN).
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in row.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    for x in row.iter_mut() {
        *x /= sum;
    }
}
