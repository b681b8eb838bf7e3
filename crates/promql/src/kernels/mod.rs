//! Pure kernels: arithmetic over values, samples and label sets, with no
//! evaluator, plan or source in sight. Each imports only the value model
//! and its sibling kernels (`float` lowest).

pub(crate) mod aggr;
pub(crate) mod binop;
pub(crate) mod float;
pub(crate) mod histogram;
pub(crate) mod range;
pub(crate) mod time;
pub(crate) mod window;
