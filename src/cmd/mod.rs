//! One file per subcommand: its `Args` (clap) and one `run()`. Commands parse
//! and validate at the edge, then call the library stages.

pub mod bench;
pub mod demo;
pub mod export;
pub mod fit;
pub mod merge;
pub mod mixtures;
pub mod online;
pub mod optimize;
pub mod predict;
pub mod prepare;
pub mod report;
pub mod sweep;
pub mod train;
pub mod validate;
