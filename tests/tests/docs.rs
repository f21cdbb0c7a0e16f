//! Pages that quote files: the manifests in docs/mac-farm.md are the end-to-end tests' own
//! (e2e/testdata/), so the examples a farm copies are the ones every CI run applies.

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Each `<!-- e2e/testdata/NAME -->` marker of `doc` with the fenced block after it.
fn quoted(doc: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = doc;
    while let Some(at) = rest.find("<!-- e2e/testdata/") {
        let after = &rest[at + "<!-- ".len()..];
        let Some(end) = after.find(" -->") else {
            break;
        };
        let path = after[..end].to_string();
        let body = &after[end..];
        let open = body.find("```yaml\n").map(|i| i + "```yaml\n".len());
        let block = open.and_then(|o| body[o..].find("```").map(|c| body[o..o + c].to_string()));
        out.push((path, block.unwrap_or_default()));
        rest = &after[end..];
    }
    out
}

#[test]
fn mac_farm_examples_are_the_e2e_manifests() -> anyhow::Result<()> {
    let doc = std::fs::read_to_string(repo().join("docs/mac-farm.md"))?;
    let quotes = quoted(&doc);
    for name in [
        "ios-build-job.yaml",
        "failing-job.yaml",
        "build-cache-deployment.yaml",
    ] {
        assert!(
            quotes
                .iter()
                .any(|(p, _)| p == &format!("e2e/testdata/{name}")),
            "docs/mac-farm.md quotes e2e/testdata/{name}"
        );
    }
    for (path, block) in &quotes {
        let file = std::fs::read_to_string(repo().join(path))?;
        assert_eq!(
            block, &file,
            "docs/mac-farm.md's copy of {path} differs from the file the tests apply"
        );
    }
    // Every manifest a farm would apply is at least named there.
    for entry in std::fs::read_dir(repo().join("e2e/testdata"))? {
        let name = entry?.file_name().to_string_lossy().to_string();
        if name.ends_with(".yaml") {
            assert!(doc.contains(&name), "docs/mac-farm.md names {name}");
        }
    }
    Ok(())
}

#[test]
fn a_changed_manifest_is_caught() {
    let doc = "<!-- e2e/testdata/a.yaml -->\n```yaml\nkind: Pod\n```\n";
    assert_eq!(
        quoted(doc),
        vec![("e2e/testdata/a.yaml".to_string(), "kind: Pod\n".to_string())]
    );
    assert_eq!(quoted("no quotes"), vec![]);
}
