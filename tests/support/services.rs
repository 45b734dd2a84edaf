//! Real services for the tests: moto server (DynamoDB, S3, Secrets Manager) in a Python
//! venv, redis-server, and a TCP proxy that a test can cut and restore to simulate outages
//! without losing the service's state. Everything listens on loopback only.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::fixtures_dir;

/// Pin of moto for reproducible runs.
const MOTO: &str = "moto[server]==5.2.5";

fn lock(path: &Path) -> std::fs::File {
    let f = std::fs::File::options().create(true).truncate(false).write(true).open(path).expect("lock file");
    f.lock().expect("lock");
    f
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for_port(port: u16, within: Duration) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if std::net::TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_millis(200))
            .is_ok()
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A child process killed when dropped, and when the test process dies (its watchdog exits
/// once its parent is gone).
pub struct Service {
    child: Child,
    /// Port it listens on.
    pub port: u16,
}

impl Drop for Service {
    fn drop(&mut self) {
        // The watchdog shell leads its own process group: kill the whole group, server too.
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.child.id())]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `program args` under a shell watchdog that kills it when the test process exits, so
/// no server outlives the test run.
fn spawn_watched(program: &Path, args: &[String]) -> Child {
    let quoted: Vec<String> = std::iter::once(program.to_string_lossy().into_owned())
        .chain(args.iter().cloned())
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    let script = format!(
        "{} & child=$!; trap 'kill $child 2>/dev/null' EXIT TERM; while kill -0 {} 2>/dev/null && kill -0 $child 2>/dev/null; do sleep 0.5; done",
        quoted.join(" "),
        std::process::id()
    );
    use std::os::unix::process::CommandExt;
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning a service")
}

/// The moto venv, created once (pip install into the fixture dir).
pub fn moto_venv() -> PathBuf {
    pip_venv("venv", &[MOTO], |venv| venv.join("bin/moto_server").is_file())
}

/// The SAM venv: the AWS SAM CLI and cfn-lint (tests/all/deploy.rs lints the template), and
/// cargo-lambda, which `sam build` runs for the template's `rust-cargolambda` functions (its
/// wheel brings Zig, its linker).
pub fn sam_venv() -> PathBuf {
    pip_venv("venv-sam", &["aws-sam-cli==1.170.0", "cfn-lint==1.58.0", "cargo-lambda==1.9.2"], |venv| {
        ["sam", "cfn-lint", "cargo-lambda"].iter().all(|bin| venv.join("bin").join(bin).is_file())
    })
}

/// A Python venv `name` under the fixture dir with `requirements` pip-installed, created once:
/// concurrent test processes (and kelp-bench) wait for the first. `installed` tells whether a
/// venv there is complete.
pub fn pip_venv(name: &str, requirements: &[&str], installed: impl Fn(&Path) -> bool) -> PathBuf {
    let venv = fixtures_dir().join(name);
    if installed(&venv) {
        return venv;
    }
    let _guard = lock(&fixtures_dir().join(format!("{name}.lock")));
    if !installed(&venv) {
        let ok = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().map(|s| s.success()).unwrap_or(false);
        assert!(ok, "python3 -m venv failed (python3 with venv is needed for {})", requirements.join(" "));
        let ok = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(requirements)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "pip install {} failed", requirements.join(" "));
    }
    venv
}

/// Start a moto server on a fresh loopback port.
pub fn start_moto() -> Service {
    let venv = moto_venv();
    let port = free_port();
    // Serialised requests: moto's conditional writes are not atomic under its threaded
    // server (see moto_serial.py); DynamoDB's are.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("support/moto_serial.py");
    let child = spawn_watched(
        &venv.join("bin/python"),
        &[script.to_string_lossy().into_owned(), "127.0.0.1".into(), port.to_string()],
    );
    assert!(wait_for_port(port, Duration::from_secs(60)), "moto_server did not start on {port}");
    Service { child, port }
}

/// The moto server shared by this test process.
pub fn moto() -> &'static Service {
    static MOTO_SERVER: OnceLock<Service> = OnceLock::new();
    MOTO_SERVER.get_or_init(start_moto)
}

/// `redis://127.0.0.1:6379`, starting a redis-server there if nothing listens.
pub fn shared_redis() -> String {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        if wait_for_port(6379, Duration::from_millis(300)) {
            return;
        }
        let _ = Command::new("redis-server")
            .args(["--port", "6379", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "yes"])
            .status();
        assert!(
            wait_for_port(6379, Duration::from_secs(10)),
            "no redis-server on 127.0.0.1:6379 and none could be started"
        );
    });
    "redis://127.0.0.1:6379".into()
}

/// A dedicated redis-server a test may stop and start again (on the same port).
pub struct OwnRedis {
    /// Port.
    pub port: u16,
    server: Mutex<Option<Service>>,
}

impl OwnRedis {
    /// Start one on a fresh port.
    pub fn start() -> Self {
        let port = free_port();
        let r = Self { port, server: Mutex::new(None) };
        r.resume();
        r
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stop the server (clients see connection refused).
    pub fn stop(&self) {
        self.server.lock().unwrap().take();
        let until = Instant::now() + Duration::from_secs(5);
        while wait_for_port(self.port, Duration::from_millis(50)) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Start it again on the same port.
    pub fn resume(&self) {
        let redis = which("redis-server").expect("redis-server on PATH");
        let args: Vec<String> =
            ["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        let child = spawn_watched(&redis, &args);
        assert!(wait_for_port(self.port, Duration::from_secs(10)), "redis-server did not start");
        *self.server.lock().unwrap() = Some(Service { child, port: self.port });
    }
}

/// `program` on the PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(program)).find(|p| p.is_file())
}

/// A TCP proxy in front of a service: `cut()` refuses new connections and resets the open
/// ones (an outage), `restore()` brings it back; the service keeps its state meanwhile.
pub struct FaultProxy {
    /// Port clients connect to.
    pub port: u16,
    down: Arc<AtomicBool>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

impl FaultProxy {
    /// Proxy `127.0.0.1:{port}` → `127.0.0.1:{target}`.
    pub async fn start(target: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let (tx, _) = tokio::sync::watch::channel(0u64);
        let generation = Arc::new(tx);
        let (d, g) = (down.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { continue };
                if d.load(Ordering::SeqCst) {
                    drop(inbound); // connection closed at once
                    continue;
                }
                let mut cut = g.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self { port, down, generation }
    }

    /// `http://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Start the outage.
    pub fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// End the outage.
    pub fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}
