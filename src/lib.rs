//! ple-runtime: allocation-free CPU scoring of multi-task recommendation models (PLE, MMoE, CGC,
//! shared-bottom, ESMM) from one memory-mapped `.ple` weight file.
//!
//! ```no_run
//! use ple::{Model, Session, Input};
//! let model = Model::open("examples/models/quickstart.ple")?;
//! let mut session = Session::new(&model, 256)?;
//! # let columns: Vec<Input> = vec![];
//! let mut scores = vec![0f32; 8 * model.output_width()];
//! session.run(&columns, 8, &mut scores, None)?;
//! # Ok::<(), ple::Error>(())
//! ```
//!
//! Layout: `format` (the file), `model` (validation and the execution plan), `kernels` (SIMD
//! matrix kernels and activations), `session` (scoring), `pool` (threads for large batches),
//! `ffi` (the C ABI).

pub mod error;
pub mod ffi;
pub mod format;
pub mod kernels;
pub mod model;
pub mod pool;
pub mod session;

pub use error::{Error, RaggedProblem, Result};
pub use format::DType;
pub use kernels::SimdLevel;
pub use model::{InputKind, LoadOptions, Model, Pooling, Residency};
pub use pool::{Executor, Pool};
pub use session::{Input, Session};
