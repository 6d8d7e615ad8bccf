//! Object stores for source and output URLs.
//!
//! Settings come from the spec's `[storage]` section first and the provider's standard
//! environment variables second (`AWS_*`, `GOOGLE_*`, `AZURE_*`). Credentials are only
//! read from the environment and never logged.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::http::HttpBuilder;
use object_store::{BackoffConfig, ClientConfigKey, ClientOptions, ObjectStore, RetryConfig};
use strata_spec::StorageOptions;
use url::Url;

use crate::EngineError;

/// A boolean environment variable: unset is false; anything but true/false (or 1/0) is
/// an error naming it.
fn env_flag(name: &str) -> Result<bool, EngineError> {
    match std::env::var(name) {
        Err(_) => Ok(false),
        Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" | "" => Ok(false),
            _ => Err(EngineError::Config(format!(
                "{name}={v:?} is not a boolean (true or false)"
            ))),
        },
    }
}

/// Builds the store for `url`, or `None` for schemes the session already serves
/// (`file://` and `memory://`).
pub fn object_store_for(
    url: &Url,
    storage: &StorageOptions,
) -> Result<Option<Arc<dyn ObjectStore>>, EngineError> {
    let retry = &storage.retry;
    let retry_config = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_secs_f64(retry.initial_backoff_secs),
            max_backoff: Duration::from_secs_f64(
                retry.max_backoff_secs.max(retry.initial_backoff_secs),
            ),
            base: 2.0,
        },
        max_retries: retry.max_retries,
        retry_timeout: Duration::from_secs_f64(retry.retry_timeout_secs),
    };
    // Timeouts are set as config keys: `with_client_options` would replace the client
    // settings the builders read from the environment (AWS_ALLOW_HTTP, proxies, ...).
    let timeouts = [
        (
            ClientConfigKey::ConnectTimeout,
            millis(retry.connect_timeout_secs),
        ),
        (ClientConfigKey::Timeout, millis(retry.request_timeout_secs)),
    ];
    let err = |e: object_store::Error| {
        EngineError::bad_store(redact(url), crate::error::one_line(&e.to_string())).caused_by(e)
    };
    let bucket = || {
        url.host_str()
            .filter(|h| !h.is_empty())
            .map(str::to_string)
            .ok_or_else(|| EngineError::bad_store(redact(url), "the URL names no bucket"))
    };

    let store: Arc<dyn ObjectStore> = match url.scheme() {
        "file" | "memory" => return Ok(None),
        "s3" | "s3a" => {
            let s3 = &storage.s3;
            let mut b = AmazonS3Builder::from_env()
                .with_bucket_name(bucket()?)
                .with_retry(retry_config);
            for (key, value) in &timeouts {
                b = b.with_config(AmazonS3ConfigKey::Client(*key), value);
            }
            if let Some(endpoint) = &s3.endpoint {
                b = b.with_endpoint(endpoint);
            }
            if let Some(region) = &s3.region {
                b = b.with_region(region);
            }
            if let Some(path_style) = s3.path_style {
                b = b.with_virtual_hosted_style_request(!path_style);
            }
            if let Some(allow_http) = s3.allow_http {
                b = b.with_allow_http(allow_http);
            }
            Arc::new(b.build().map_err(err)?)
        }
        "gs" => {
            let mut b = GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(bucket()?)
                .with_retry(retry_config);
            for (key, value) in &timeouts {
                b = b.with_config(GoogleConfigKey::Client(*key), value);
            }
            Arc::new(b.build().map_err(err)?)
        }
        "az" | "abfs" | "abfss" | "azure" | "adl" => {
            let mut b = MicrosoftAzureBuilder::from_env()
                .with_url(url.as_str())
                .with_retry(retry_config);
            for (key, value) in &timeouts {
                b = b.with_config(AzureConfigKey::Client(*key), value);
            }
            Arc::new(b.build().map_err(err)?)
        }
        "http" | "https" => {
            let mut client = ClientOptions::new();
            for (key, value) in &timeouts {
                client = client.with_config(*key, value);
            }
            let allow_http = match storage.http.allow_http {
                Some(allow) => allow,
                None => env_flag("STRATA_ALLOW_HTTP")?,
            };
            if url.scheme() == "http" && !allow_http {
                return Err(EngineError::bad_store(
                    redact(url),
                    "plain http:// is refused (it sends data in clear text); set \
                     `[storage.http] allow_http = true` or STRATA_ALLOW_HTTP=true",
                ));
            }
            client = client.with_allow_http(allow_http);
            Arc::new(
                HttpBuilder::new()
                    .with_url(url.origin().ascii_serialization())
                    .with_retry(retry_config)
                    .with_client_options(client)
                    .build()
                    .map_err(err)?,
            )
        }
        other => {
            return Err(EngineError::bad_store(
                redact(url),
                format!(
                    "unsupported scheme `{other}` (use file://, s3://, gs://, az://, http(s):// or memory://)"
                ),
            ));
        }
    };
    Ok(Some(store))
}

/// A URL fit for logs: user info and query (where signed URLs keep secrets) removed.
pub(crate) fn redact(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.to_string()
}

/// A duration in object_store's config syntax (humantime).
fn millis(secs: f64) -> String {
    format!("{}ms", (secs * 1000.0).round() as u64)
}
