//! Opening a pipeline's source: list its Parquet files once, read their schemas, and
//! register exactly those files as the `source` table.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::functions::unicode::expr_fn::character_length as length;
use datafusion::functions_aggregate::expr_fn::max;
use datafusion::prelude::ident;
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use strata_spec::StorageOptions;
use url::Url;

use crate::coded::{CodedTable, coded_schema};
use crate::error::one_line;
use crate::store::{object_store_for, redact};
use crate::{Engine, EngineError};

/// One input file as it was when the job listed it: recorded so outputs can say
/// exactly what went in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub url: String,
    pub size: u64,
    pub e_tag: Option<String>,
    pub last_modified: String,
}

/// The pipeline's input, opened and registered in the session.
#[derive(Debug, Clone)]
pub struct SourceTable {
    /// The URL as the spec or CLI gave it (secrets removed).
    pub url: String,
    /// Every file read, sorted by path.
    pub files: Vec<SourceFile>,
    pub schema: SchemaRef,
    /// Each file's own schema, in the order of `files`: a column of the merged schema
    /// may be missing from some (see [`crate::check_schema`]).
    pub file_schemas: Vec<SchemaRef>,
    /// What the table was registered from, to register it again another way.
    listing: Arc<Listing>,
}

/// The listed files of a source and how to read them.
#[derive(Debug)]
struct Listing {
    format: Arc<ParquetFormat>,
    extension: &'static str,
    metas: Vec<ObjectMeta>,
    urls: Vec<ListingTableUrl>,
    /// The source URL, secrets removed, for errors.
    shown: String,
}

impl Listing {
    /// A table over exactly the listed files, read with `schema`.
    fn table(&self, schema: SchemaRef) -> Result<ListingTable, EngineError> {
        let options = ListingOptions::new(self.format.clone()).with_file_extension(self.extension);
        let config = ListingTableConfig::new_with_multi_paths(self.urls.clone())
            .with_listing_options(options)
            .with_schema(schema);
        ListingTable::try_new(config)
            .map_err(EngineError::datafusion(format!("source `{}`", self.shown)))
    }
}

impl Engine {
    /// Lists the Parquet files at `url` (a file, a prefix ending in `/`, or a glob),
    /// reads their footers for the schema and registers them as table `name`.
    ///
    /// Fails with a one-line error naming the URL or file when nothing is there, a
    /// prefix holds no Parquet, or a file is not valid Parquet.
    pub async fn open_source(
        &self,
        url: &str,
        storage: &StorageOptions,
        name: &str,
    ) -> Result<SourceTable, EngineError> {
        let table_url = parse_table_url(url)?;
        let shown = redact(table_url.get_url());
        if let Some(store) = object_store_for(table_url.get_url(), storage)? {
            self.ctx.register_object_store(table_url.get_url(), store);
        }
        let store: Arc<dyn ObjectStore> = self
            .ctx
            .runtime_env()
            .object_store(table_url.object_store())
            .map_err(EngineError::datafusion(format!("source `{shown}`")))?;
        let state = self.ctx.state();

        // A URL naming one object is read whatever its extension; prefixes and globs
        // pick up `*.parquet` only, so `_SUCCESS` markers and the like are skipped.
        let single = !table_url.is_collection() && table_url.get_glob().is_none();
        let extension = if single { "" } else { ".parquet" };
        let mut files: Vec<ObjectMeta> = table_url
            .list_all_files(&state, store.as_ref(), extension)
            .await
            .map_err(|e| {
                source_err(&shown, format!("cannot list: {}", one_line(&e.to_string())))
                    .caused_by(e)
            })?
            .try_collect()
            .await
            .map_err(|e| {
                source_err(&shown, format!("cannot list: {}", one_line(&e.to_string())))
                    .caused_by(e)
            })?;
        files.retain(|f| f.size > 0 || single);
        files.sort_by(|a, b| a.location.cmp(&b.location));
        if files.is_empty() {
            let what = match table_url.get_glob() {
                _ if single => "no such file, and no `.parquet` files under it as a prefix".into(),
                Some(glob) => format!("no `.parquet` file matches the pattern `{}`", glob.as_str()),
                None => "no `.parquet` files found".into(),
            };
            return Err(source_err(&shown, what));
        }

        check_footers(&store, &files, &table_url).await?;
        let format = Arc::new(ParquetFormat::default());
        let schema = match format.infer_schema(&state, &store, &files).await {
            Ok(schema) => schema,
            Err(e) => {
                return Err(self
                    .blame_file(&format, &store, &files, &table_url, e)
                    .await);
            }
        };

        // each file's own schema: footers were just read, so mostly DataFusion's
        // metadata cache
        let file_schemas: Vec<SchemaRef> = futures::stream::iter(files.iter().map(|meta| {
            let (state, format, store) = (&state, &format, &store);
            async move {
                format
                    .infer_schema(state, store, std::slice::from_ref(meta))
                    .await
            }
        }))
        .buffered(32)
        .try_collect()
        .await
        .map_err(EngineError::datafusion(format!("source `{shown}`")))?;

        let file_urls = files
            .iter()
            .map(|f| file_url(&table_url, f))
            .collect::<Result<Vec<_>, _>>()
            .map_err(EngineError::datafusion(format!("source `{shown}`")))?;
        let listing = Arc::new(Listing {
            format,
            extension,
            metas: files,
            urls: file_urls,
            shown: shown.clone(),
        });
        let table = listing.table(schema.clone())?;
        self.ctx
            .register_table(name, Arc::new(table))
            .map_err(EngineError::datafusion(format!("source `{shown}`")))?;
        let (files, file_urls) = (&listing.metas, &listing.urls);
        tracing::info!(source = %shown, files = files.len(), columns = schema.fields().len(), "opened source");

        let files = files
            .iter()
            .zip(file_urls)
            .map(|(meta, url)| SourceFile {
                url: redact(url.get_url()),
                size: meta.size,
                e_tag: meta.e_tag.clone(),
                last_modified: meta.last_modified.to_rfc3339(),
            })
            .collect();
        Ok(SourceTable {
            url: shown,
            files,
            schema,
            file_schemas,
            listing,
        })
    }

    /// Registers the source again as table `name`, with its string columns among
    /// `columns` read as dictionaries (see [`crate::coded`]), and returns its schema.
    /// Aggregates that code their keys read those columns at a fraction of the cost.
    pub async fn register_coded(
        &self,
        source: &SourceTable,
        name: &str,
        columns: &[String],
    ) -> Result<SchemaRef, EngineError> {
        let listing = &source.listing;
        let err = || EngineError::datafusion(format!("source `{}`", listing.shown));
        // the reader needs each file's own schema (files may differ in their columns),
        // read when the source was opened
        let hints: HashMap<_, _> = listing
            .metas
            .iter()
            .zip(&source.file_schemas)
            .map(|(meta, own)| (meta.location.clone(), coded_schema(own, columns)))
            .collect();
        let schema = coded_schema(&source.schema, columns);
        let listed = Arc::new(listing.table(schema.clone())?);
        // A cluster gets the listing table itself, which Ballista serializes: its
        // schema adapter casts each file's strings to the coded type, the same values
        // the per-file hints read as they are stored.
        let table: Arc<dyn datafusion::datasource::TableProvider> = if self.is_cluster() {
            listed
        } else {
            Arc::new(CodedTable::new(listed, hints))
        };
        // a session that runs several stages registers it once per stage, with the
        // columns that stage codes
        self.ctx.deregister_table(name).map_err(err())?;
        self.ctx.register_table(name, table).map_err(err())?;
        Ok(schema)
    }

    /// After a pass failed on bytes that are not UTF-8: the first file and string
    /// column holding them, found by decoding each file's string columns alone (only
    /// ever run on that failure), or `None` when none fails alone.
    pub async fn find_invalid_utf8(&self, source: &SourceTable) -> Option<(String, String)> {
        let listing = &source.listing;
        for ((meta, url), schema) in listing
            .metas
            .iter()
            .zip(&listing.urls)
            .zip(&source.file_schemas)
        {
            let one = Listing {
                format: listing.format.clone(),
                extension: listing.extension,
                metas: vec![meta.clone()],
                urls: vec![url.clone()],
                shown: listing.shown.clone(),
            };
            let Ok(table) = one.table(schema.clone()) else {
                continue;
            };
            let Ok(df) = self.ctx.read_table(Arc::new(table)) else {
                continue;
            };
            for field in schema.fields() {
                if !matches!(
                    field.data_type(),
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                ) {
                    continue;
                }
                let decoded = df
                    .clone()
                    .aggregate(vec![], vec![max(length(ident(field.name())))]);
                let failed = match decoded {
                    Ok(d) => d.collect().await.is_err(),
                    Err(_) => false,
                };
                if failed {
                    return Some((redact(url.get_url()), field.name().clone()));
                }
            }
        }
        None
    }

    /// Schema inference reads every footer at once; on failure, find the file to name.
    async fn blame_file(
        &self,
        format: &ParquetFormat,
        store: &Arc<dyn ObjectStore>,
        files: &[ObjectMeta],
        table_url: &ListingTableUrl,
        err: datafusion::error::DataFusionError,
    ) -> EngineError {
        let state = self.ctx.state();
        for f in files {
            if let Err(e) = format
                .infer_schema(&state, store, std::slice::from_ref(f))
                .await
            {
                let url = file_url(table_url, f)
                    .map(|u| redact(u.get_url()))
                    .unwrap_or_else(|_| f.location.to_string());
                return source_err(
                    &url,
                    format!("not a readable Parquet file: {}", one_line(&e.to_string())),
                );
            }
        }
        // every file reads alone: name the first whose schema the ones before it
        // cannot take (a column with another type, say)
        let mut merged: Option<datafusion::arrow::datatypes::Schema> = None;
        for f in files {
            let Ok(own) = format
                .infer_schema(&state, store, std::slice::from_ref(f))
                .await
            else {
                continue;
            };
            let next = match &merged {
                None => Ok(own.as_ref().clone()),
                Some(m) => datafusion::arrow::datatypes::Schema::try_merge([
                    m.clone(),
                    own.as_ref().clone(),
                ]),
            };
            match next {
                Ok(m) => merged = Some(m),
                Err(e) => {
                    let url = file_url(table_url, f)
                        .map(|u| redact(u.get_url()))
                        .unwrap_or_else(|_| f.location.to_string());
                    return source_err(
                        &url,
                        format!(
                            "its schema does not fit the files before it: {}",
                            one_line(&e.to_string())
                        ),
                    );
                }
            }
        }
        source_err(
            &redact(table_url.get_url()),
            format!(
                "the files' schemas cannot be merged: {}",
                one_line(&err.to_string())
            ),
        )
    }
}

/// Reads each file's 8-byte Parquet tail (metadata length + magic) and rejects files
/// whose footer cannot be right, naming the file. Besides a clearer message, this
/// keeps a truncated file from reaching parquet 59's footer decoder, which subtracts
/// the claimed metadata length from the file length unchecked (a panic in debug builds).
async fn check_footers(
    store: &Arc<dyn ObjectStore>,
    files: &[ObjectMeta],
    table_url: &ListingTableUrl,
) -> Result<(), EngineError> {
    const TAIL: u64 = 8;
    const MAGIC: &[u8; 4] = b"PAR1";
    let checks = futures::stream::iter(files.iter().map(|meta| async move {
        let name = || file_url(table_url, meta).map(|u| redact(u.get_url())).unwrap_or_else(|_| meta.location.to_string());
        if meta.size < TAIL + MAGIC.len() as u64 {
            return Err(source_err(&name(), format!("not a readable Parquet file: only {} bytes", meta.size)));
        }
        let tail = store
            .get_range(&meta.location, meta.size - TAIL..meta.size)
            .await
            .map_err(|e| source_err(&name(), format!("cannot read: {}", one_line(&e.to_string()))).caused_by(e))?;
        if &tail[4..8] != MAGIC {
            return Err(source_err(&name(), "not a readable Parquet file: no `PAR1` magic at its end".into()));
        }
        let metadata_len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
        if metadata_len + TAIL + MAGIC.len() as u64 > meta.size {
            return Err(source_err(
                &name(),
                format!("not a readable Parquet file: its footer claims {metadata_len} bytes of metadata in a {}-byte file", meta.size),
            ));
        }
        Ok(())
    }))
    .buffered(32);
    checks.try_collect::<Vec<()>>().await.map(|_| ())
}

fn source_err(url: &str, message: String) -> EngineError {
    EngineError::bad_source(url, message)
}

/// Parses a source URL. Plain paths and `file://` URLs may hold globs (DataFusion
/// resolves those); for other schemes the glob is split off here, since DataFusion
/// only does that for paths.
fn parse_table_url(url: &str) -> Result<ListingTableUrl, EngineError> {
    let bad = |message: String| source_err(url, message);
    if url.contains("://") && !url.starts_with("file://") {
        let parsed = Url::parse(url).map_err(|e| bad(format!("not a valid URL: {e}")))?;
        let path = parsed.path();
        if let Some(pos) = path.find(['*', '?', '[']) {
            let cut = path[..pos].rfind('/').map_or(0, |i| i + 1);
            let (base, glob) = path.split_at(cut);
            let mut base_url = parsed.clone();
            base_url.set_path(base);
            let pattern =
                glob::Pattern::new(glob).map_err(|e| bad(format!("invalid glob `{glob}`: {e}")))?;
            return ListingTableUrl::try_new(base_url, Some(pattern))
                .map_err(|e| bad(one_line(&e.to_string())));
        }
        return ListingTableUrl::try_new(parsed, None).map_err(|e| bad(one_line(&e.to_string())));
    }
    let local = url.strip_prefix("file://").unwrap_or(url);
    ListingTableUrl::parse(local).map_err(|e| bad(one_line(&e.to_string())))
}

/// The URL of one listed object, in the same store as the table URL.
fn file_url(
    table_url: &ListingTableUrl,
    meta: &ObjectMeta,
) -> datafusion::error::Result<ListingTableUrl> {
    let mut url = table_url.get_url().clone();
    url.set_path(&format!("/{}", meta.location));
    url.set_query(None);
    ListingTableUrl::try_new(url, None)
}
