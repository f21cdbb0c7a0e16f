//! kubectl itself (its SPDY and WebSocket clients) against the streaming server: a stand-in for
//! the API server answers kubectl's pod lookups and passes the exec and port-forward connection
//! through to the URL darwin-cri returned, as kubelet's proxy does.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use darwin_cri_tests::streaming::split_url;
use darwin_cri_tests::*;
use k8s_cri::v1 as cri;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The API server stand-in: JSON for kubectl's reads, and the next streaming URL for its
/// exec/attach/portforward request.
struct ApiServer {
    port: u16,
    next_url: Arc<Mutex<Option<String>>>,
    seen: Arc<Mutex<Vec<String>>>,
}

const POD: &str = "build";

fn pod_json() -> String {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": POD, "namespace": "default", "uid": "uid-build"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "ports": [{"containerPort": 80}]}]},
        "status": {"phase": "Running", "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0, "image": "busybox", "imageID": "", "state": {"running": {}}}]}
    })
    .to_string()
}

fn discovery(path: &str) -> Option<String> {
    let v = match path {
        "/api" => {
            serde_json::json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
        }
        "/apis" => serde_json::json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}),
        "/api/v1" => serde_json::json!({
            "kind": "APIResourceList", "groupVersion": "v1",
            "resources": [
                {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod", "verbs": ["get", "list"], "shortNames": ["po"]},
                {"name": "pods/exec", "singularName": "", "namespaced": true, "kind": "PodExecOptions", "verbs": ["create", "get"]},
                {"name": "pods/attach", "singularName": "", "namespaced": true, "kind": "PodAttachOptions", "verbs": ["create", "get"]},
                {"name": "pods/portforward", "singularName": "", "namespaced": true, "kind": "PodPortForwardOptions", "verbs": ["create", "get"]}
            ]
        }),
        "/version" => {
            serde_json::json!({"major": "1", "minor": "32", "gitVersion": "v1.32.0", "platform": "darwin/arm64"})
        }
        p if p == format!("/api/v1/namespaces/default/pods/{POD}") => return Some(pod_json()),
        _ => return None,
    };
    Some(v.to_string())
}

impl ApiServer {
    async fn start() -> anyhow::Result<ApiServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let next_url: Arc<Mutex<Option<String>>> = Arc::default();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let (urls, log) = (Arc::clone(&next_url), Arc::clone(&seen));
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (urls, log) = (Arc::clone(&urls), Arc::clone(&log));
                tokio::spawn(async move {
                    let _ = serve(conn, urls, log).await;
                });
            }
        });
        Ok(ApiServer {
            port,
            next_url,
            seen,
        })
    }

    fn kubeconfig(&self, dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: c\n  context:\n    cluster: fake\n    user: u\n    namespace: default\ncurrent-context: c\n",
                self.port
            ),
        )?;
        Ok(path)
    }
}

async fn serve(
    mut conn: TcpStream,
    urls: Arc<Mutex<Option<String>>>,
    log: Arc<Mutex<Vec<String>>>,
) -> anyhow::Result<()> {
    loop {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            if conn.read(&mut byte).await? == 0 {
                return Ok(());
            }
            head.push(byte[0]);
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        let mut first = text.lines().next().unwrap_or_default().split_whitespace();
        let (method, target) = (
            first.next().unwrap_or_default().to_string(),
            first.next().unwrap_or_default().to_string(),
        );
        let path = target.split('?').next().unwrap_or_default().to_string();
        log.lock()
            .map(|mut l| l.push(format!("{method} {target}")))
            .ok();
        if ["/exec", "/attach", "/portforward"]
            .iter()
            .any(|s| path.ends_with(s))
        {
            let url = urls
                .lock()
                .ok()
                .and_then(|mut u| u.take())
                .unwrap_or_default();
            let (addr, stream_path) = split_url(&url)?;
            let mut upstream = TcpStream::connect(&addr).await?;
            // kubelet's proxy keeps the client's request and headers, on the runtime's URL.
            let rewritten = text.replacen(&target, &stream_path, 1);
            upstream.write_all(rewritten.as_bytes()).await?;
            tokio::io::copy_bidirectional(&mut conn, &mut upstream).await?;
            return Ok(());
        }
        let (status, body) = match discovery(&path) {
            Some(b) => ("200 OK", b),
            None => ("404 Not Found", serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}).to_string()),
        };
        let resp = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(resp.as_bytes()).await?;
    }
}

async fn kubectl(
    kubeconfig: &std::path::Path,
    env: &[(&str, &str)],
    args: &[&str],
    stdin: &[u8],
) -> anyhow::Result<std::process::Output> {
    let mut cmd = tokio::process::Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .envs(env.iter().copied());
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin).await?;
    }
    Ok(tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await??)
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_exec_and_port_forward() -> anyhow::Result<()> {
    let version = std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()?;
    println!("{}", String::from_utf8_lossy(&version.stdout));
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let port = free_port()?;
    let script = format!(
        "mkdir -p /www && echo served-to-kubectl > /www/index.html && exec httpd -f -p 127.0.0.1:{port} -h /www"
    );
    let pod = run_pod(&mut rt, &server, POD).await?;
    let id = create(&mut rt, &pod, container_config("c", &script)).await?;
    start(&mut rt, &id).await?;
    wait_for(Duration::from_secs(10), "httpd", || async move {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    })
    .await?;
    let api = ApiServer::start().await?;
    let kubeconfig = api.kubeconfig(server.dir.path())?;
    let exec_url = |rt: &mut Rt, cmd: &[&str], stdin: bool| {
        let req = cri::ExecRequest {
            container_id: id.clone(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            stdin,
            stdout: true,
            stderr: true,
            tty: false,
        };
        let mut rt = rt.clone();
        async move { anyhow::Ok(rt.exec(req).await?.into_inner().url) }
    };

    // SPDY (forced) and whatever this kubectl prefers (WebSocket v5 from 1.30 on).
    for env in [
        &[("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")][..],
        &[][..],
    ] {
        let cmd = ["sh", "-c", "echo out; echo err >&2; exit 3"];
        *api.next_url.lock().map_err(|_| anyhow::anyhow!("lock"))? =
            Some(exec_url(&mut rt, &cmd, false).await?);
        let out = kubectl(
            &kubeconfig,
            env,
            &["exec", POD, "-c", "c", "--", cmd[0], cmd[1], cmd[2]],
            b"",
        )
        .await?;
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "out\n",
            "{env:?} {out:?} {:?}",
            api.seen.lock().map(|s| s.clone())
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("err"),
            "{out:?}"
        );
        assert_eq!(
            out.status.code(),
            Some(3),
            "{env:?}: kubectl passes the exit code on: {out:?}"
        );

        *api.next_url.lock().map_err(|_| anyhow::anyhow!("lock"))? =
            Some(exec_url(&mut rt, &["cat"], true).await?);
        let input: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let out = kubectl(
            &kubeconfig,
            env,
            &["exec", "-i", POD, "-c", "c", "--", "cat"],
            &input,
        )
        .await?;
        assert_eq!(
            out.stdout.len(),
            input.len(),
            "{env:?} {:?}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout == input);
        assert_eq!(out.status.code(), Some(0));
    }

    // Port-forward over SPDY: a local port on kubectl's side reaches httpd in the pod.
    *api.next_url.lock().map_err(|_| anyhow::anyhow!("lock"))? = Some(
        rt.port_forward(cri::PortForwardRequest {
            pod_sandbox_id: pod,
            port: vec![port as i32],
        })
        .await?
        .into_inner()
        .url,
    );
    let local = free_port()?;
    let mut forward = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["port-forward", POD, &format!("{local}:{port}")])
        .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut body = String::new();
    for _ in 0..3 {
        let mut conn = wait_for(
            Duration::from_secs(20),
            "kubectl to listen",
            || async move { TcpStream::connect(("127.0.0.1", local)).await.ok() },
        )
        .await?;
        conn.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").await?;
        body.clear();
        let mut bytes = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut bytes)).await??;
        body = String::from_utf8_lossy(&bytes).into_owned();
        assert!(body.contains("served-to-kubectl"), "{body:?}");
    }
    forward.kill().await?;
    // The exec requests as they reached the stand-in: POST is SPDY, GET a WebSocket upgrade.
    let seen = api.seen.lock().map(|s| s.clone()).unwrap_or_default();
    println!("{}", seen.join("\n"));
    assert!(
        seen.iter()
            .any(|r| r.starts_with("POST") && r.contains("/exec?")),
        "{seen:?}"
    );
    Ok(())
}
