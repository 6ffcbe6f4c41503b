//! The kubelet's streaming endpoints, over HTTPS on the node's port: `exec` as the
//! WebSocket channel protocol (`v5.channel.k8s.io`, or v4 without stream close), which
//! the API server proxies here untouched because the Node declares
//! `ExtendWebSocketsToKubelet`; and `containerLogs` (current or previous run, `tailLines`).
//! Listens on 127.0.0.1 only; the API server is its one client (it does not check the API
//! server's client certificate: a test tool on a loopback address).

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::pods::{ExecTarget, Targets};
use super::runtime::Images;

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const CLOSE: u8 = 255;

pub struct Streaming {
    pub targets: Targets,
    pub images: Images,
    pub sandbox: std::path::PathBuf,
}

/// A TLS acceptor for the node's certificate.
pub fn acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()?;
    let key =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

impl Streaming {
    pub async fn serve(self: Arc<Self>, listener: TcpListener, tls: TlsAcceptor) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (this, tls) = (self.clone(), tls.clone());
            tokio::spawn(async move {
                let Ok(stream) = tls.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |request| {
                    let this = this.clone();
                    async move { Ok::<_, Infallible>(this.route(request).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    }

    async fn route(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let path: Vec<String> = request
            .uri()
            .path()
            .split('/')
            .skip(1)
            .map(String::from)
            .collect();
        let query = request.uri().query().unwrap_or_default().to_string();
        let result = match path.as_slice() {
            [kind, namespace, pod, container] if kind == "exec" => {
                self.exec(request, namespace, pod, container, &query)
            }
            [kind, namespace, pod, container] if kind == "containerLogs" => {
                self.logs(namespace, pod, container, &query)
            }
            [health] if health == "healthz" => Ok(text(StatusCode::OK, "ok")),
            _ => Ok(text(
                StatusCode::NOT_FOUND,
                "not served by the e2e node agent",
            )),
        };
        result.unwrap_or_else(|error| text(StatusCode::BAD_REQUEST, &format!("{error:#}")))
    }

    fn target(&self, namespace: &str, pod: &str, container: &str) -> anyhow::Result<ExecTarget> {
        self.targets
            .lock()
            .expect("targets lock")
            .get(&(namespace.into(), pod.into(), container.into()))
            .cloned()
            .with_context(|| {
                format!("no container {container} in a pod {namespace}/{pod} on this node")
            })
    }

    fn logs(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        query: &str,
    ) -> anyhow::Result<Response<Full<Bytes>>> {
        let target = self.target(namespace, pod, container)?;
        let params: Vec<(String, String)> = form(query);
        let previous = params.iter().any(|(k, v)| k == "previous" && v == "true");
        let path = if previous {
            &target.previous_log
        } else {
            &target.log
        };
        let text_of = std::fs::read_to_string(path).unwrap_or_default();
        let tail = params
            .iter()
            .find(|(k, _)| k == "tailLines")
            .and_then(|(_, v)| v.parse::<usize>().ok());
        let body = match tail {
            Some(n) => {
                let lines: Vec<&str> = text_of.lines().collect();
                let mut out = lines[lines.len().saturating_sub(n)..].join("\n");
                out.push('\n');
                out
            }
            None => text_of,
        };
        Ok(text(StatusCode::OK, &body))
    }

    fn exec(
        &self,
        mut request: Request<Incoming>,
        namespace: &str,
        pod: &str,
        container: &str,
        query: &str,
    ) -> anyhow::Result<Response<Full<Bytes>>> {
        let target = self.target(namespace, pod, container)?;
        let pid = target.pid.with_context(|| {
            format!("the container {container} of {namespace}/{pod} is not running")
        })?;
        let params = form(query);
        let flag = |names: &[&str]| {
            params
                .iter()
                .any(|(k, v)| names.contains(&k.as_str()) && (v == "1" || v == "true"))
        };
        let (stdin, stdout, stderr) = (
            flag(&["input", "stdin"]),
            flag(&["output", "stdout"]),
            flag(&["error", "stderr"]),
        );
        let command: Vec<String> = params
            .iter()
            .filter(|(k, _)| k == "command")
            .map(|(_, v)| v.clone())
            .collect();
        let first = command.first().context("exec without a command")?;
        let program = self.images.program(&target.image, first)?;
        let key = request
            .headers()
            .get(http::header::SEC_WEBSOCKET_KEY)
            .context("exec is served over WebSocket only (no Sec-WebSocket-Key)")?
            .clone();
        let offered = request
            .headers()
            .get(http::header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let protocol = ["v5.channel.k8s.io", "v4.channel.k8s.io"]
            .into_iter()
            .find(|p| offered.split(',').any(|o| o.trim() == *p))
            .with_context(|| format!("none of the offered subprotocols {offered:?} is served (v5.channel.k8s.io, v4.channel.k8s.io)"))?;
        let mut spec = target.template.clone();
        spec.enter = Some(pid);
        spec.mounts.clear();
        spec.program = program;
        spec.args = command[1..].to_vec();
        let sandbox = self.sandbox.clone();
        let upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let socket =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            if let Err(error) = run_exec(socket, &sandbox, &spec, stdin, stdout, stderr).await {
                tracing::info!("exec: {error:#}");
            }
        });
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        Ok(Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(http::header::CONNECTION, "Upgrade")
            .header(http::header::UPGRADE, "websocket")
            .header(http::header::SEC_WEBSOCKET_ACCEPT, accept)
            .header(http::header::SEC_WEBSOCKET_PROTOCOL, protocol)
            .body(Full::new(Bytes::new()))?)
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response")
}

fn form(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Runs the command in the container's mount namespace and carries its streams.
async fn run_exec(
    socket: WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>,
    sandbox: &Path,
    spec: &super::sandbox::SandboxSpec,
    stdin: bool,
    stdout: bool,
    stderr: bool,
) -> anyhow::Result<()> {
    use std::process::Stdio;
    let spec_file = tempfile::NamedTempFile::new()?;
    std::fs::write(spec_file.path(), serde_json::to_vec(spec)?)?;
    let piped = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
    // In the container's process group: stopping the container stops what runs in it.
    let group = spec.enter.map_or(0, |pid| pid as i32);
    let mut child = tokio::process::Command::new(sandbox)
        .arg("sandbox")
        .arg(spec_file.path())
        .process_group(group)
        .stdin(piped(stdin))
        .stdout(piped(stdout))
        .stderr(piped(stderr))
        .kill_on_drop(true)
        .spawn()
        .context("starting the exec'd command")?;
    let (mut sink, mut source) = socket.split();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Message>(16);
    let mut pumps = Vec::new();
    for (channel, reader) in [
        (
            STDOUT,
            child
                .stdout
                .take()
                .map(|r| Box::new(r) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ),
        (
            STDERR,
            child
                .stderr
                .take()
                .map(|r| Box::new(r) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ),
    ] {
        let Some(mut reader) = reader else { continue };
        let tx = tx.clone();
        pumps.push(tokio::spawn(async move {
            let mut buffer = vec![0u8; 32 * 1024];
            loop {
                match reader.read(&mut buffer[1..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        buffer[0] = channel;
                        if tx
                            .send(Message::binary(buffer[..=n].to_vec()))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        }));
    }
    drop(tx);
    let mut input = child.stdin.take();
    let writer = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            if sink.send(message).await.is_err() {
                break;
            }
        }
        sink
    });
    let reader = tokio::spawn(async move {
        while let Some(Ok(message)) = source.next().await {
            let Message::Binary(data) = message else {
                if matches!(message, Message::Close(_)) {
                    break;
                }
                continue;
            };
            match data.first() {
                Some(&STDIN) => {
                    if let Some(w) = input.as_mut()
                        && w.write_all(&data[1..]).await.is_err()
                    {
                        input = None;
                    }
                }
                Some(&CLOSE) if data.get(1) == Some(&STDIN) => input = None,
                _ => {}
            }
        }
    });
    let status = child.wait().await?;
    for pump in pumps {
        let _ = pump.await;
    }
    reader.abort();
    let mut sink = writer.await?;
    let report = match status.code() {
        Some(0) => serde_json::json!({"metadata": {}, "status": "Success"}),
        code => {
            let code = code.unwrap_or(128);
            serde_json::json!({
                "metadata": {}, "status": "Failure",
                "message": format!("command terminated with non-zero exit code: {code}"),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            })
        }
    };
    let mut frame = vec![ERROR];
    frame.extend(serde_json::to_vec(&report)?);
    sink.send(Message::binary(frame)).await?;
    sink.close().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_queries_decode_as_the_api_server_encodes_them() {
        let query =
            "command=tributary&command=produce&command=a%2Fb+c&input=1&output=1&error=1&bad=%zz";
        let params = form(query);
        let commands: Vec<&str> = params
            .iter()
            .filter(|(k, _)| k == "command")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(commands, ["tributary", "produce", "a/b c"]);
        assert!(params.contains(&("input".into(), "1".into())));
        assert!(params.contains(&("bad".into(), "%zz".into())));
    }
}
