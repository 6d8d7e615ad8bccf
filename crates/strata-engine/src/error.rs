use datafusion::error::DataFusionError;
use strata_spec::SpecError;

/// Why the engine could not open or read a pipeline's data. Each displays as one line
/// naming the URL, file or column concerned.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The spec names something the data does not have (column absent, wrong type, ...).
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A source file or prefix that cannot be listed or read as Parquet. The message
    /// shows the cause on one line; the cause itself, where there is one, is the source.
    #[error("source `{url}`: {message}")]
    Source {
        url: String,
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    /// An object store that cannot be configured for a URL.
    #[error("object store for `{url}`: {message}")]
    Store {
        url: String,
        message: String,
        #[source]
        source: Option<BoxError>,
    },
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
    /// The source at `url` is wrong as `message` says.
    pub fn bad_source(url: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Source {
            url: url.into(),
            message: message.into(),
            source: None,
        }
    }

    /// No object store can be made for `url`, as `message` says.
    pub fn bad_store(url: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Store {
            url: url.into(),
            message: message.into(),
            source: None,
        }
    }

    /// The same error, with `cause` as its source (for the variants that keep one).
    pub fn caused_by(mut self, cause: impl Into<BoxError>) -> Self {
        if let Self::Source { source, .. } | Self::Store { source, .. } = &mut self {
            *source = Some(cause.into());
        }
        self
    }

    /// Wraps a DataFusion error with what strata was doing when it happened.
    pub fn datafusion(context: impl Into<String>) -> impl FnOnce(DataFusionError) -> Self {
        let context = context.into();
        move |e| Self::DataFusion {
            context,
            source: Box::new(e),
        }
    }
}

pub use strata_spec::{BoxError, one_line};
