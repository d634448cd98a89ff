//! Certificates for the TLS tests, made with the openssl CLI in a directory of their own.

use std::path::PathBuf;

use crate::log_dir;

/// Certificates made with the openssl CLI in a directory of their own.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// An empty directory `<log dir>/<name>-<pid>-pki`.
    ///
    /// # Panics
    /// When it cannot be made.
    pub fn new(name: &str) -> Self {
        let dir = log_dir().join(format!("{name}-{}-pki", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the pki directory");
        Pki { dir }
    }

    /// The path of `file` in the directory.
    #[must_use]
    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    fn openssl(&self, args: &[&str]) {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("running openssl");
        assert!(
            out.status.success(),
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A self-signed CA `name` (`name.crt`, `name.key`).
    ///
    /// # Panics
    /// When openssl fails.
    pub fn ca(&self, name: &str) {
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &self.path(&format!("{name}.key")),
            "-out",
            &self.path(&format!("{name}.crt")),
        ]);
    }

    /// A certificate `name` signed by `ca`, for `usage` (serverAuth or clientAuth).
    ///
    /// # Panics
    /// When openssl fails.
    pub fn issue(&self, ca: &str, name: &str, usage: &str) {
        self.issue_for(ca, name, usage, "DNS:localhost,IP:127.0.0.1");
    }

    /// A certificate `name` signed by `ca`, for `usage`, naming `subject_alt_names` (openssl's
    /// form: `DNS:a,DNS:b,IP:…`).
    ///
    /// # Panics
    /// When openssl fails.
    pub fn issue_for(&self, ca: &str, name: &str, usage: &str, subject_alt_names: &str) {
        let ext = self.path(&format!("{name}.ext"));
        std::fs::write(
            &ext,
            format!("subjectAltName={subject_alt_names}\nextendedKeyUsage={usage}\n"),
        )
        .expect("writing the extensions");
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &self.path(&format!("{name}.key")),
            "-out",
            &self.path(&format!("{name}.csr")),
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &self.path(&format!("{name}.csr")),
            "-CA",
            &self.path(&format!("{ca}.crt")),
            "-CAkey",
            &self.path(&format!("{ca}.key")),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &self.path(&format!("{name}.crt")),
        ]);
    }
}
