//! The node reporter as the binary runs it: the labels a fixture Mac gets, and a server whose
//! reporter cannot reach the cluster serving CRI all the same.

use std::time::Duration;

use darwin_cri_tests::*;

fn info_plist(key: &str, value: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\"><dict>\
         <key>{key}</key><string>{value}</string></dict></plist>"
    )
}

#[test]
fn print_lists_the_labels_of_the_installed_xcodes_and_skips_a_broken_one() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let apps = dir.path().join("Applications");
    for (app, plist) in [
        (
            "Xcode_16.2.app",
            info_plist("CFBundleShortVersionString", "16.2"),
        ),
        (
            "Xcode_16.1.app",
            info_plist("CFBundleShortVersionString", "16.1"),
        ),
        ("Xcode_broken.app", "not a plist".to_string()),
    ] {
        std::fs::create_dir_all(apps.join(app).join("Contents/Developer"))?;
        std::fs::write(apps.join(app).join("Contents/Info.plist"), plist)?;
    }
    let link = dir.path().join("xcode_select_link");
    std::os::unix::fs::symlink(apps.join("Xcode_16.2.app/Contents/Developer"), &link)?;
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\napplications_dir = {:?}\nxcode_select_link = {:?}\nsimulator_runtimes_dir = {:?}\n",
            apps.display().to_string(),
            link.display().to_string(),
            dir.path().join("none").display().to_string()
        ),
    )?;
    let out = std::process::Command::new(binary())
        .arg("--config")
        .arg(&config)
        .args(["node-report", "--print"])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let labels: std::collections::BTreeMap<String, String> = serde_json::from_slice(&out.stdout)?;
    assert_eq!(
        labels.get("darwin-cri.io/xcode-16.2").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        labels.get("darwin-cri.io/xcode-16.1").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        labels
            .get("darwin-cri.io/xcode-selected")
            .map(String::as_str),
        Some("16.2")
    );
    assert!(
        labels.contains_key("darwin-cri.io/arch")
            && labels.contains_key("darwin-cri.io/macos-build")
    );
    assert_eq!(
        labels.keys().filter(|k| k.contains("xcode-")).count(),
        3,
        "{labels:?}"
    );
    for (k, v) in &labels {
        let name = k.strip_prefix("darwin-cri.io/").expect("prefix");
        for part in [name, v.as_str()] {
            assert!(part.len() <= 63, "{part}");
            assert!(
                part.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
                "{part}"
            );
        }
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Xcode_broken.app"),
        "the skipped Xcode is named: {stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn a_server_whose_reporter_has_no_kubeconfig_serves_and_says_why() -> anyhow::Result<()> {
    let server = Server::start_with_config(
        "[node]\nreport = true\nkubeconfig = \"/nonexistent/kubelet.conf\"\n",
    )
    .await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "r").await?;
    let cid = create(&mut rt, &pod, container_config("c", "echo served")).await?;
    start(&mut rt, &cid).await?;
    let s = wait_exited(&mut rt, &cid, Duration::from_secs(10)).await?;
    assert_eq!(s.exit_code, 0);
    assert!(
        !server.log().contains("without the kube feature"),
        "build the binary with --features cri-server/kube (scripts/test.sh does)"
    );
    wait_for(
        Duration::from_secs(10),
        "the reporter's error in the log",
        || {
            let log = server.log();
            async move { log.contains("/nonexistent/kubelet.conf").then_some(()) }
        },
    )
    .await?;
    Ok(())
}
