//! The output URL of a publish: object paths under it and the commit protocol.

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use url::Url;

use crate::manifest::{Latest, Manifest};
use crate::{RunError, one_line};

/// Folder of the runs under the output URL.
pub const RUNS_DIR: &str = "runs";
/// The commit record of a run, in its folder.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The pointer to the latest committed run, at the output URL's root.
pub const LATEST_FILE: &str = "_latest";

/// What a run prefix already holds.
#[derive(Debug)]
pub enum Existing {
    /// No manifest: nothing committed there (leftover shards of a failed run are overwritten).
    None,
    /// The manifest of this very run (same identity): publishing again is a no-op.
    Same(Box<Manifest>),
}

/// An output URL (a folder) and the store behind it.
#[derive(Debug, Clone)]
pub struct Destination {
    store: Arc<dyn ObjectStore>,
    root: Url,
    root_path: String,
}

impl Destination {
    /// `root` is the output folder; a trailing `/` is added when missing.
    pub fn new(store: Arc<dyn ObjectStore>, mut root: Url) -> Self {
        if !root.path().ends_with('/') {
            let p = format!("{}/", root.path());
            root.set_path(&p);
        }
        let root_path = Path::from_url_path(root.path())
            .map(|p| p.to_string())
            .unwrap_or_default();
        Self {
            store,
            root,
            root_path,
        }
    }

    /// The folder of run `run_id`, relative to the root.
    pub fn run_dir(run_id: &str) -> String {
        format!("{RUNS_DIR}/{run_id}")
    }

    /// The URL of `rel` (a path relative to the root), for messages and readers.
    pub fn url_of(&self, rel: &str) -> String {
        format!("{}{rel}", self.root)
    }

    pub fn root(&self) -> &Url {
        &self.root
    }

    /// The store and the object path of `rel`, for reads and writes that stream.
    pub fn object(&self, rel: &str) -> (Arc<dyn ObjectStore>, Path) {
        (self.store.clone(), self.path_of(rel))
    }

    fn path_of(&self, rel: &str) -> Path {
        if self.root_path.is_empty() {
            Path::from(rel)
        } else {
            Path::from(format!("{}/{rel}", self.root_path))
        }
    }

    fn store_err(&self, rel: &str) -> impl FnOnce(object_store::Error) -> RunError + '_ {
        let url = self.url_of(rel);
        move |e| RunError::Store {
            url,
            message: one_line(&e.to_string()),
            source: e,
        }
    }

    /// The object at `rel`, or `None` when there is none.
    pub async fn get(&self, rel: &str) -> Result<Option<Bytes>, RunError> {
        match self.store.get(&self.path_of(rel)).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(self.store_err(rel))?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.store_err(rel)(e)),
        }
    }

    /// Size of the object at `rel`, or `None` when there is none.
    pub async fn size(&self, rel: &str) -> Result<Option<u64>, RunError> {
        match self.store.head(&self.path_of(rel)).await {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.store_err(rel)(e)),
        }
    }

    /// Writes (or overwrites) `rel`.
    pub async fn put(&self, rel: &str, bytes: Bytes) -> Result<(), RunError> {
        self.store
            .put(&self.path_of(rel), PutPayload::from(bytes))
            .await
            .map_err(self.store_err(rel))?;
        Ok(())
    }

    /// Deletes the object at `rel`; one that is not there is no error.
    pub async fn delete(&self, rel: &str) -> Result<(), RunError> {
        match self.store.delete(&self.path_of(rel)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.store_err(rel)(e)),
        }
    }

    /// Writes `rel` only if no object is there; `false` when one already was.
    async fn put_new(&self, rel: &str, bytes: Bytes) -> Result<bool, RunError> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&self.path_of(rel), PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.store_err(rel)(e)),
        }
    }

    /// Reads the manifest of a run, if committed.
    pub async fn manifest(&self, run_id: &str) -> Result<Option<Manifest>, RunError> {
        let rel = format!("{}/{MANIFEST_FILE}", Self::run_dir(run_id));
        match self.get(&rel).await? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| RunError::not_json(self.url_of(&rel), "manifest", e)),
        }
    }

    /// What the run prefix holds. A manifest of a different run is a conflict: it is
    /// refused before any shard is written, so a published run is never overwritten.
    pub async fn existing(&self, run_id: &str, identity: &str) -> Result<Existing, RunError> {
        match self.manifest(run_id).await? {
            None => Ok(Existing::None),
            Some(m) if m.identity == identity => Ok(Existing::Same(Box::new(m))),
            Some(m) => Err(RunError::Conflict {
                url: self.url_of(&format!("{}/{MANIFEST_FILE}", Self::run_dir(run_id))),
                message: format!("its identity is {}, this run's is {identity}", m.identity),
            }),
        }
    }

    /// Commits a run: the manifest is put create-if-absent (the one atomic step), then
    /// `_latest` is pointed at it. A concurrent publisher of the same run loses the race
    /// harmlessly; one of a different run gets a conflict.
    pub async fn commit(&self, manifest: &Manifest) -> Result<(), RunError> {
        let rel = format!("{}/{MANIFEST_FILE}", Self::run_dir(&manifest.run_id));
        let bytes = strata_spec::json::to_string_pretty(manifest)
            .expect("a manifest always serializes")
            .into_bytes();
        // What is committed must read back as what was meant (a non-finite weight sum,
        // written as `null`, would not): refuse it before the commit, never after.
        if let Err(e) = serde_json::from_slice::<Manifest>(&bytes) {
            return Err(RunError::Manifest {
                url: self.url_of(&rel),
                message: format!("the manifest would not read back ({e}); nothing was committed"),
                source: Some(Box::new(e)),
            });
        }
        if !self.put_new(&rel, bytes.into()).await? {
            self.existing(&manifest.run_id, &manifest.identity).await?;
        }
        self.point_latest(manifest).await
    }

    /// Points `_latest` at a committed run.
    pub async fn point_latest(&self, manifest: &Manifest) -> Result<(), RunError> {
        let latest = Latest {
            run_id: manifest.run_id.clone(),
            manifest: format!("{}/{MANIFEST_FILE}", Self::run_dir(&manifest.run_id)),
        };
        let bytes = serde_json::to_vec_pretty(&latest).expect("a pointer always serializes");
        self.put(LATEST_FILE, bytes.into()).await
    }
}

/// Whether `id` can name a run folder: 1 to 128 letters, digits, `-`, `_` or `.`, not
/// starting with `.` (so never `..`, never a path).
pub fn valid_run_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A manifest's run id and shard paths stay inside the run folder: relative paths of
/// plain names (no `..`, no `.`, no empty segment, no backslash or control character).
fn check_manifest_paths(m: &Manifest) -> Result<(), String> {
    if !valid_run_id(&m.run_id) {
        return Err(format!("run id {:?} is not a run id", m.run_id));
    }
    let plain = |seg: &str| {
        !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg
                .chars()
                .all(|c| !c.is_control() && !matches!(c, '\\' | ':'))
    };
    for path in m.shards.iter().map(|s| &s.path).chain([&m.summary]) {
        if !path.split('/').all(plain) {
            return Err(format!(
                "names file {path:?}, which is not a plain path inside the run folder"
            ));
        }
    }
    Ok(())
}

/// Finds the manifest that a user-given URL means: a `manifest.json` itself, a run
/// folder holding one, or an output root whose `_latest` names one. Returns the run's
/// folder as a destination, the manifest's relative name in it, and the manifest.
pub async fn resolve(
    store: Arc<dyn ObjectStore>,
    url: &Url,
) -> Result<(Destination, Manifest), RunError> {
    let not_found = |what: &str| RunError::manifest(url.to_string(), what);
    let parse = |bytes: &[u8], at: String| -> Result<Manifest, RunError> {
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| RunError::not_json(at.clone(), "manifest", e))?;
        // a manifest names files to read: none may lead outside its run folder
        check_manifest_paths(&m).map_err(|message| RunError::manifest(at, message))?;
        Ok(m)
    };
    if url.path().ends_with(".json") {
        let mut dir = url.clone();
        let parent = url
            .path()
            .rsplit_once('/')
            .map_or("/", |(p, _)| p)
            .to_string();
        dir.set_path(&format!("{parent}/"));
        let dest = Destination::new(store, dir);
        let name = url
            .path()
            .rsplit('/')
            .next()
            .unwrap_or(MANIFEST_FILE)
            .to_string();
        let bytes = dest
            .get(&name)
            .await?
            .ok_or_else(|| not_found("no such manifest"))?;
        let m = parse(&bytes, url.to_string())?;
        return Ok((dest, m));
    }
    let dest = Destination::new(store.clone(), url.clone());
    if let Some(bytes) = dest.get(MANIFEST_FILE).await? {
        let m = parse(&bytes, dest.url_of(MANIFEST_FILE))?;
        return Ok((dest, m));
    }
    let latest = dest.get(LATEST_FILE).await?.ok_or_else(|| {
        not_found("neither a manifest.json nor a _latest pointer is there: no committed run")
    })?;
    let latest: Latest = serde_json::from_slice(&latest)
        .map_err(|e| RunError::not_json(dest.url_of(LATEST_FILE), "pointer", e))?;
    if !valid_run_id(&latest.run_id) {
        return Err(RunError::manifest(
            dest.url_of(LATEST_FILE),
            format!(
                "names run id {:?}, which is not a run id (letters, digits, `-`, `_`, `.`)",
                latest.run_id
            ),
        ));
    }
    let run = Destination::new(
        store,
        Url::parse(&dest.url_of(&format!("{}/", Destination::run_dir(&latest.run_id))))
            .map_err(|e| not_found(&e.to_string()))?,
    );
    let bytes = run.get(MANIFEST_FILE).await?.ok_or_else(|| {
        RunError::manifest(
            run.url_of(MANIFEST_FILE),
            "_latest names this run but its manifest is missing",
        )
    })?;
    let m = parse(&bytes, run.url_of(MANIFEST_FILE))?;
    Ok((run, m))
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;
    use crate::manifest::SplitTotals;

    fn manifest(run_id: &str, identity: &str) -> Manifest {
        Manifest {
            schema_version: crate::MANIFEST_SCHEMA_VERSION,
            run_id: run_id.into(),
            identity: identity.into(),
            created_at: "2026-12-02T00:00:00Z".into(),
            strata_version: "test".into(),
            pipeline: "p".into(),
            seed: 1,
            spec_sha256: String::new(),
            source: "memory:///src/".into(),
            inputs: vec![],
            schema: vec![],
            stratum_columns: vec!["g".into()],
            target_shard_rows: 10,
            summary: "curation.json".into(),
            splits: vec![SplitTotals {
                split: "train".into(),
                shards: 0,
                rows: 0,
                bytes: 0,
                weight_sum: -0.0,
            }],
            shards: vec![],
        }
    }

    fn root() -> (Arc<InMemory>, Destination) {
        let store = Arc::new(InMemory::new());
        let dest = Destination::new(store.clone(), Url::parse("memory:///out/").unwrap());
        (store, dest)
    }

    async fn text(store: &InMemory, path: &str) -> Option<String> {
        let got = store.get(&Path::from(path)).await.ok()?;
        Some(String::from_utf8(got.bytes().await.unwrap().to_vec()).unwrap())
    }

    /// The manifest is written first and `_latest` after; resolving the root follows
    /// `_latest` to the run; no `-0.0` reaches the JSON.
    #[tokio::test]
    async fn commit_writes_the_manifest_then_the_pointer() {
        let (store, dest) = root();
        assert!(matches!(
            dest.existing("r1", "id1").await.unwrap(),
            Existing::None
        ));
        dest.commit(&manifest("r1", "id1")).await.unwrap();
        let m = text(&store, "out/runs/r1/manifest.json").await.unwrap();
        assert!(!m.contains("-0.0"), "{m}");
        let latest: Latest =
            serde_json::from_str(&text(&store, "out/_latest").await.unwrap()).unwrap();
        assert_eq!(latest.run_id, "r1");
        let (run, found) = resolve(store.clone(), dest.root()).await.unwrap();
        assert_eq!(found.identity, "id1");
        assert_eq!(run.root().as_str(), "memory:///out/runs/r1/");
        assert!(matches!(
            dest.existing("r1", "id1").await.unwrap(),
            Existing::Same(_)
        ));
    }

    /// Committing the same run again is harmless; another run under the same id is a
    /// conflict that overwrites nothing and leaves `_latest` where it was.
    #[tokio::test]
    async fn a_different_run_under_the_same_id_is_refused() {
        let (store, dest) = root();
        dest.commit(&manifest("r1", "id1")).await.unwrap();
        dest.commit(&manifest("r1", "id1")).await.unwrap();
        let before = text(&store, "out/runs/r1/manifest.json").await.unwrap();
        let e = dest.commit(&manifest("r1", "id2")).await.unwrap_err();
        assert!(matches!(e, RunError::Conflict { .. }), "{e}");
        assert!(e.to_string().contains("nothing was overwritten"), "{e}");
        assert_eq!(
            text(&store, "out/runs/r1/manifest.json").await.unwrap(),
            before
        );
        assert!(matches!(
            dest.existing("r1", "id2").await,
            Err(RunError::Conflict { .. })
        ));
        // a second, different run commits beside it and moves the pointer
        dest.commit(&manifest("r2", "id2")).await.unwrap();
        let latest: Latest =
            serde_json::from_str(&text(&store, "out/_latest").await.unwrap()).unwrap();
        assert_eq!(latest.run_id, "r2");
    }

    /// A run whose shards were written but whose manifest never was is not a run:
    /// resolving the root finds nothing until something is committed.
    #[tokio::test]
    async fn an_uncommitted_run_is_invisible() {
        let (store, dest) = root();
        dest.put("runs/r1/train/part-00000.parquet", Bytes::from_static(b"x"))
            .await
            .unwrap();
        let e = resolve(store.clone(), dest.root()).await.unwrap_err();
        assert!(e.to_string().contains("no committed run"), "{e}");
    }

    /// A pointer or manifest that is not JSON is an error naming its URL, whose source
    /// is the JSON error itself (a caller can walk the chain), shown once on its line.
    #[tokio::test]
    async fn unreadable_json_keeps_its_cause_as_the_source() {
        let (store, dest) = root();
        store
            .put(
                &Path::from("out/_latest"),
                PutPayload::from_static(b"{not json"),
            )
            .await
            .unwrap();
        let e = resolve(store.clone(), dest.root()).await.unwrap_err();
        let shown = e.to_string();
        assert!(
            shown.starts_with("`memory:///out/_latest`: not a strata pointer: "),
            "{shown}"
        );
        let cause = std::error::Error::source(&e).expect("the JSON error is the source");
        assert!(
            cause.downcast_ref::<serde_json::Error>().is_some(),
            "{cause:?}"
        );
        assert!(shown.ends_with(&cause.to_string()), "{shown}");

        store
            .put(
                &Path::from("out/runs/r1/manifest.json"),
                PutPayload::from_static(b"[1]"),
            )
            .await
            .unwrap();
        let e = dest.manifest("r1").await.unwrap_err();
        let cause = std::error::Error::source(&e).expect("the JSON error is the source");
        assert!(cause.is::<serde_json::Error>(), "{cause:?}");
        // a wrong value with no underlying error has no source
        let e = RunError::manifest("memory:///x", "names run id \"..\"");
        assert!(std::error::Error::source(&e).is_none());
    }
}
