use datafusion::error::DataFusionError;
use strata_spec::SpecError;

/// Why the engine could not open or read a pipeline's data. Each displays as one line
/// naming the URL, file or column concerned.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The spec names something the data does not have (column absent, wrong type, ...).
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("source `{url}`: {message}")]
    Source { url: String, message: String },
    #[error("object store for `{url}`: {message}")]
    Store { url: String, message: String },
    #[error("{context}: {}", one_line(&.source.to_string()))]
    DataFusion {
        context: String,
        #[source]
        source: Box<DataFusionError>,
    },
    #[error("{0}")]
    Config(String),
}

impl EngineError {
    /// Wraps a DataFusion error with what strata was doing when it happened.
    pub fn datafusion(context: impl Into<String>) -> impl FnOnce(DataFusionError) -> Self {
        let context = context.into();
        move |e| Self::DataFusion {
            context,
            source: Box::new(e),
        }
    }
}

pub use strata_spec::one_line;
