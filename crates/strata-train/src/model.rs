//! The model: a multi-layer perceptron (Dense → ReLU → Dropout, repeated, then a Dense
//! output with a softmax), its PyTorch-style initialisation and its checkpoint.
//!
//! The checkpoint is safetensors, laid out as the `state_dict` of the PyTorch module
//!
//! ```text
//! nn.Sequential(nn.Linear(d, h1), nn.ReLU(), nn.Dropout(p),   # 0, 1, 2
//!               nn.Linear(h1, h2), nn.ReLU(), nn.Dropout(p),  # 3, 4, 5
//!               ...,
//!               nn.Linear(hn, classes), nn.Softmax(dim=1))
//! ```
//!
//! so `0.weight` is `[h1, d]` (out × in, PyTorch's layout), `0.bias` is `[h1]`, and the
//! output layer is `{3n}.weight`; `load_state_dict` takes the file as it is.

use candle_core::{D, Device, Tensor, Var};
use rand::RngCore;
use safetensors::tensor::{Dtype, TensorView};

use crate::TrainError;

/// One Dense layer; `weight` is `[out, in]`.
#[derive(Debug, Clone)]
pub struct Dense {
    pub weight: Var,
    pub bias: Var,
}

/// The trained model.
#[derive(Debug, Clone)]
pub struct Mlp {
    layers: Vec<Dense>,
    device: Device,
}

/// A uniform draw in [0, 1) from the top 53 bits of a 64-bit word: spelled out so the
/// stream (and every weight) is defined by strata, not by a crate's sampling code.
pub(crate) fn unit_f64(rng: &mut impl RngCore) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

impl Mlp {
    /// A freshly initialised model, as PyTorch's `nn.Linear` does it: weights and
    /// biases uniform in ±1/sqrt(fan_in), drawn from `rng` (layer by layer, weights
    /// row-major, then biases).
    pub fn init(
        inputs: usize,
        hidden: &[usize],
        classes: usize,
        rng: &mut impl RngCore,
        device: &Device,
    ) -> Result<Self, TrainError> {
        let mut layers = Vec::with_capacity(hidden.len() + 1);
        let mut fan_in = inputs;
        for &out in hidden.iter().chain(std::iter::once(&classes)) {
            let bound = 1.0 / (fan_in as f64).sqrt();
            let mut draw = |n: usize| -> Vec<f32> {
                (0..n)
                    .map(|_| ((unit_f64(rng) * 2.0 - 1.0) * bound) as f32)
                    .collect()
            };
            let w = draw(out * fan_in);
            let b = draw(out);
            layers.push(Dense {
                weight: Var::from_tensor(&Tensor::from_vec(w, (out, fan_in), device)?)?,
                bias: Var::from_tensor(&Tensor::from_vec(b, out, device)?)?,
            });
            fan_in = out;
        }
        Ok(Self {
            layers,
            device: device.clone(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Width of the input rows.
    pub fn inputs(&self) -> usize {
        self.layers[0].weight.dims()[1]
    }

    /// Units of the hidden layers.
    pub fn hidden(&self) -> Vec<usize> {
        self.layers[..self.layers.len() - 1]
            .iter()
            .map(|l| l.weight.dims()[0])
            .collect()
    }

    /// Number of outputs (the label's classes).
    pub fn classes(&self) -> usize {
        self.layers[self.layers.len() - 1].weight.dims()[0]
    }

    /// Trainable parameters, in checkpoint order.
    pub fn vars(&self) -> Vec<Var> {
        self.layers
            .iter()
            .flat_map(|l| [l.weight.clone(), l.bias.clone()])
            .collect()
    }

    /// The logits of `x` (`[rows, inputs]`). `masks`, one per hidden layer, are the
    /// dropout multipliers (0 or 1 / (1 - p)); none means inference.
    pub fn logits(&self, x: &Tensor, masks: &[Tensor]) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        let last = self.layers.len() - 1;
        for (i, l) in self.layers.iter().enumerate() {
            h = h
                .matmul(&l.weight.as_tensor().t()?)?
                .broadcast_add(l.bias.as_tensor())?;
            if i < last {
                h = h.relu()?;
                if let Some(m) = masks.get(i) {
                    h = (h * m)?;
                }
            }
        }
        Ok(h)
    }

    /// Class probabilities of `x` (softmax of the logits), `[rows, classes]`.
    pub fn probabilities(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::softmax(&self.logits(x, &[])?, D::Minus1)
    }

    /// A copy of the current parameters (for keeping the best epoch).
    pub(crate) fn snapshot(&self) -> candle_core::Result<Vec<Tensor>> {
        self.vars().iter().map(|v| v.as_tensor().copy()).collect()
    }

    pub(crate) fn restore(&self, snapshot: &[Tensor]) -> candle_core::Result<()> {
        for (v, t) in self.vars().iter().zip(snapshot) {
            v.set(t)?;
        }
        Ok(())
    }

    /// The checkpoint's tensor names, in order: `0.weight`, `0.bias`, `3.weight`, ...
    fn names(layers: usize) -> Vec<String> {
        (0..layers)
            .flat_map(|i| [format!("{}.weight", 3 * i), format!("{}.bias", 3 * i)])
            .collect()
    }

    /// The safetensors checkpoint (f32, little-endian; metadata `format = pt`). The
    /// bytes depend only on the weights.
    pub fn to_safetensors(&self) -> Result<Vec<u8>, TrainError> {
        let mut data = Vec::new();
        for (name, var) in Self::names(self.layers.len()).into_iter().zip(self.vars()) {
            let values = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            data.push((name, var.dims().to_vec(), bytes));
        }
        let views = data
            .iter()
            .map(|(name, shape, bytes)| {
                TensorView::new(Dtype::F32, shape.clone(), bytes).map(|v| (name.clone(), v))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TrainError::Model(format!("cannot write the checkpoint: {e}")))?;
        // one metadata key: safetensors keeps metadata in a hash map, so more than one
        // key would be written in a different order from run to run
        let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
        safetensors::serialize(views, Some(metadata))
            .map_err(|e| TrainError::Model(format!("cannot write the checkpoint: {e}")))
    }

    /// Reads a checkpoint written by [`Mlp::to_safetensors`] (or by PyTorch from the
    /// same `nn.Sequential`); `context` names the file in errors.
    pub fn from_safetensors(
        bytes: &[u8],
        device: &Device,
        context: &str,
    ) -> Result<Self, TrainError> {
        let bad = |m: String| TrainError::Model(format!("{context}: {m}"));
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let mut layers = Vec::new();
        let mut fan_in: Option<usize> = None;
        for i in 0.. {
            let wname = format!("{}.weight", 3 * i);
            let Ok(w) = st.tensor(&wname) else { break };
            let b = st
                .tensor(&format!("{}.bias", 3 * i))
                .map_err(|_| bad(format!("`{wname}` has no bias `{}.bias`", 3 * i)))?;
            let load = |v: &TensorView<'_>, name: &str| -> Result<Tensor, TrainError> {
                if v.dtype() != Dtype::F32 {
                    return Err(bad(format!(
                        "`{name}` is {:?}, strata models are F32",
                        v.dtype()
                    )));
                }
                let values: Vec<f32> = v
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                Ok(Tensor::from_vec(values, v.shape(), device)?)
            };
            let wt = load(&w, &wname)?;
            let bt = load(&b, &format!("{}.bias", 3 * i))?;
            let (out, inp) = wt
                .dims2()
                .map_err(|_| bad(format!("`{wname}` is not a matrix")))?;
            if bt.dims() != [out] || fan_in.is_some_and(|f| f != inp) {
                return Err(bad(format!(
                    "layer `{wname}` does not fit the layer before it (shapes {:?} and {:?})",
                    wt.dims(),
                    bt.dims()
                )));
            }
            fan_in = Some(out);
            layers.push(Dense {
                weight: Var::from_tensor(&wt)?,
                bias: Var::from_tensor(&bt)?,
            });
        }
        if layers.is_empty() {
            return Err(bad("holds no `0.weight`: not a strata model".into()));
        }
        Ok(Self {
            layers,
            device: device.clone(),
        })
    }

    /// Floating-point operations of one training step per row, forward and backward:
    /// 2·in·out per Dense layer forward, twice that backward (the input and weight
    /// gradients; the first layer needs no input gradient, counted anyway).
    pub fn train_flops_per_row(&self) -> u64 {
        self.layers
            .iter()
            .map(|l| {
                let d = l.weight.dims();
                6 * (d[0] * d[1]) as u64
            })
            .sum()
    }
}

pub(crate) fn f32_tensor(
    values: Vec<f32>,
    rows: usize,
    cols: usize,
    device: &Device,
) -> candle_core::Result<Tensor> {
    Tensor::from_vec(values, (rows, cols), device)
}
