//! One file per subcommand: its `Args` (clap) and one `run()`. Commands parse
//! and validate at the edge, then call the library stages.

pub mod demo;
pub mod fit;
pub mod optimize;
pub mod predict;
pub mod prepare;
pub mod sweep;
pub mod train;
