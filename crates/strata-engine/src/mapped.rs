//! `file://` with ranged reads mapped, not copied into fresh zeroed buffers: the Parquet
//! reader holds several row groups' column chunks at once, so each copy landed on pages
//! never touched before (a sixth of the profile's time). Everything else (listing,
//! writing, whole-object reads, errors) is `LocalFileSystem`'s. The why and the cost:
//! docs/engine.md, "Reading local files".

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::execution::object_store::ObjectStoreRegistry;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

/// `file://` with ranged reads mapped.
#[derive(Debug, Default)]
pub(crate) struct MappedLocal {
    inner: LocalFileSystem,
}

impl fmt::Display for MappedLocal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MappedLocal({})", self.inner)
    }
}

/// Ranges this small are copied: a mapping costs two system calls and a page.
const MAP_FROM: u64 = 64 * 1024;

/// An error of this store, as `LocalFileSystem` reports those it has no variant for.
fn error(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> object_store::Error {
    object_store::Error::Generic {
        store: "LocalFileSystem",
        source: source.into(),
    }
}

/// A range that the file at `path` (`size` bytes) does not hold.
fn outside(path: &std::path::Path, range: &Range<u64>, size: u64) -> object_store::Error {
    error(format!(
        "range {}..{} is outside {} ({size} bytes)",
        range.start,
        range.end,
        path.display()
    ))
}

/// The bytes `range` of `file`, mapped (or read, when small).
fn read(file: &std::fs::File, path: &std::path::Path, range: Range<u64>) -> Result<Bytes> {
    let err = |source: std::io::Error| error(format!("reading {}: {source}", path.display()));
    let len = (range.end - range.start) as usize;
    if range.end - range.start < MAP_FROM {
        use std::io::{Read, Seek, SeekFrom};
        // the handle is this request's own: moving its cursor races with no one
        let mut file = file;
        let mut buf = vec![0u8; len];
        file.seek(SeekFrom::Start(range.start))
            .and_then(|_| file.read_exact(&mut buf))
            .map_err(err)?;
        return Ok(Bytes::from(buf));
    }
    // SAFETY: the mapping is read only and private to this process; a source file is
    // not written while strata reads it (outputs go to new files, renamed into place).
    // A file truncated underneath by another process would fault the reader, which is
    // the one thing a copy does not risk: docs/engine.md says so.
    #[allow(unsafe_code)]
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(range.start)
            .len(len)
            .populate()
            .map(file)
    }
    .map_err(err)?;
    // a file cut short since it was opened would fault on the missing pages: an error
    let size = file.metadata().map_err(err)?.len();
    if size < range.end {
        return Err(outside(path, &range, size));
    }
    Ok(Bytes::from_owner(map))
}

#[async_trait]
impl ObjectStore for MappedLocal {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let ranged = options.range.is_some() && !options.head;
        let result = self.inner.get_opts(location, options).await?;
        if !ranged {
            return Ok(result);
        }
        match result.payload {
            GetResultPayload::File(file, path) => {
                let range = result.range.clone();
                let bytes = blocking(move || read(&file, &path, range)).await?;
                Ok(GetResult {
                    payload: GetResultPayload::Stream(
                        futures::stream::once(async move { Ok(bytes) }).boxed(),
                    ),
                    ..result
                })
            }
            payload => Ok(GetResult { payload, ..result }),
        }
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        // the inner store opens the file and maps its errors (not found, a folder)
        let result = self.inner.get_opts(location, GetOptions::default()).await?;
        let GetResultPayload::File(file, path) = result.payload else {
            return self.inner.get_ranges(location, ranges).await;
        };
        let size = result.meta.size;
        let ranges = ranges.to_vec();
        blocking(move || {
            ranges
                .into_iter()
                .map(|r| {
                    if r.start > r.end || r.end > size {
                        return Err(outside(&path, &r, size));
                    }
                    read(&file, &path, r)
                })
                .collect()
        })
        .await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

/// Runs `f` on the blocking pool, as the inner store does its reads (in place outside a
/// Tokio runtime, as it does too).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => runtime.spawn_blocking(f).await.map_err(error)?,
        Err(_) => f(),
    }
}

/// Serves `file://` in `registry` with ranged reads mapped.
pub(crate) fn register(registry: &dyn ObjectStoreRegistry) {
    let url = url::Url::parse("file://").expect("static URL");
    registry.register_store(&url, Arc::new(MappedLocal::default()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    /// A file of `n` bytes that differ from their neighbours, its path and its bytes as
    /// the standard library reads them.
    fn file(dir: &tempfile::TempDir, n: usize) -> (Path, Vec<u8>) {
        let bytes: Vec<u8> = (0..n as u64)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let fs_path = dir.path().join("data.bin");
        std::fs::write(&fs_path, &bytes).unwrap();
        let read = std::fs::read(&fs_path).unwrap();
        (Path::from_filesystem_path(&fs_path).unwrap(), read)
    }

    #[tokio::test]
    async fn ranged_reads_equal_the_files_bytes_and_the_local_stores_answers() {
        let dir = tempfile::tempdir().unwrap();
        let (path, bytes) = file(&dir, 300_000);
        let store = MappedLocal::default();
        let local = LocalFileSystem::new();
        // copied (small), mapped at unaligned offsets, the whole file, its last byte;
        // empty and past the end (one request: an error, or cut at the end)
        let ranges: Vec<Range<u64>> = vec![
            0..10,
            5..70_000,
            4095..200_000,
            123_457..300_000,
            0..300_000,
            299_999..300_000,
            0..0,
            250_000..300_001,
            300_000..300_010,
        ];
        for r in &ranges {
            let want = local.get_range(&path, r.clone()).await;
            match store.get_range(&path, r.clone()).await {
                Ok(got) => {
                    let want = want.unwrap_or_else(|e| panic!("{r:?}: {e}"));
                    let end = (r.end as usize).min(bytes.len());
                    assert_eq!(&got[..], &bytes[r.start as usize..end], "{r:?}");
                    assert_eq!(got, want, "{r:?}");
                }
                Err(e) => assert!(want.is_err(), "{r:?}: {e}"),
            }
        }
        let within: Vec<Range<u64>> = ranges
            .iter()
            .filter(|r| r.end <= 300_000)
            .cloned()
            .collect();
        let got = store.get_ranges(&path, &within).await.unwrap();
        assert_eq!(got, local.get_ranges(&path, &within).await.unwrap());
        for (r, g) in within.iter().zip(&got) {
            assert_eq!(&g[..], &bytes[r.start as usize..r.end as usize], "{r:?}");
        }
        // whole-object reads and metadata are the inner store's
        let whole = store.get(&path).await.unwrap().bytes().await.unwrap();
        assert_eq!(&whole[..], &bytes[..]);
        assert_eq!(store.head(&path).await.unwrap().size, 300_000);
    }

    #[tokio::test]
    async fn bad_ranges_and_missing_files_fail_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = file(&dir, 100_000);
        let store = MappedLocal::default();
        let e = store
            .get_ranges(&path, &[0..10, 90_000..100_001])
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("data.bin") && e.contains("100001"), "{e}");
        let missing = Path::from_filesystem_path(dir.path())
            .unwrap()
            .join("none.parquet");
        for e in [
            store.get_range(&missing, 0..100_000).await.unwrap_err(),
            store
                .get_ranges(&missing, &[0..10, 20..100_000])
                .await
                .unwrap_err(),
        ] {
            assert!(matches!(e, object_store::Error::NotFound { .. }), "{e}");
        }
    }

    #[tokio::test]
    async fn writes_and_listing_pass_through() {
        let dir = tempfile::tempdir().unwrap();
        let store = MappedLocal::default();
        let base = Path::from_filesystem_path(dir.path()).unwrap();
        let at = base.clone().join("a").join("b.txt");
        store
            .put(&at, Bytes::from_static(b"shard").into())
            .await
            .unwrap();
        assert_eq!(std::fs::read(dir.path().join("a/b.txt")).unwrap(), b"shard");
        let listed: Vec<ObjectMeta> = store
            .list(Some(&base))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].location, at);
    }
}
