//! Certificates for TLS tests, made with the `openssl` command when a test asks for them and
//! never committed: a test root CA and an intermediate CA, server certificates (ECDSA P-256
//! and RSA) for `localhost`, `127.0.0.1` and `::1`, a client certificate, an expired one, and
//! the keys in each PEM form a user may have (PKCS#8, PKCS#1 RSA, SEC1 EC).
//!
//! Standalone (std only) so that unit tests inside the crate can include it too.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The files one call to [`make`] wrote, all PEM.
pub struct Certs {
    /// The directory that holds them.
    pub dir: PathBuf,
    /// The root CA's certificate: what clients trust.
    pub ca: PathBuf,
    /// ECDSA P-256 server certificate followed by the intermediate CA that issued it.
    pub server_ec_chain: PathBuf,
    /// Its key, PKCS#8.
    pub server_ec_key: PathBuf,
    /// The same key, SEC1 ("EC PRIVATE KEY").
    pub server_ec_key_sec1: PathBuf,
    /// RSA 2048 server certificate followed by the intermediate CA.
    pub server_rsa_chain: PathBuf,
    /// Its key, PKCS#8.
    pub server_rsa_key: PathBuf,
    /// The same key, PKCS#1 ("RSA PRIVATE KEY").
    pub server_rsa_key_pkcs1: PathBuf,
    /// A client certificate (subject `CN=wsecho test client, O=wsecho tests`), issued by
    /// the root CA, with its chain-less PEM.
    pub client: PathBuf,
    /// Its key, PKCS#8.
    pub client_key: PathBuf,
    /// A server certificate for the same names that expired a day before it was made.
    pub expired: PathBuf,
    /// Its key, PKCS#8.
    pub expired_key: PathBuf,
    /// A self-signed certificate for `localhost` that no test CA issued.
    pub self_signed: PathBuf,
    /// Its key, PKCS#8.
    pub self_signed_key: PathBuf,
}

/// The names every server certificate is valid for.
pub const SERVER_NAMES: &str = "DNS:localhost,IP:127.0.0.1,IP:::1";

/// Makes a fresh set of certificates in `dir` (created if missing). Panics, with openssl's
/// own words, if a step fails.
pub fn make(dir: &Path) -> Certs {
    make_named(dir, "wsecho test")
}

/// [`make`], with the CAs named `NAME root CA` and `NAME intermediate CA`: two sets whose
/// CAs share names would have a verifier try one set's CA on the other's certificates.
pub fn make_named(dir: &Path, name: &str) -> Certs {
    fs::create_dir_all(dir).expect("create the certificate directory");
    let p = |name: &str| dir.join(name);
    let ec_key = |path: &Path| {
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            s(path),
        ])
    };
    let rsa_key = |path: &Path| {
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            s(path),
        ])
    };

    ec_key(&p("ca.key"));
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        s(&p("ca.key")),
        "-subj",
        &format!("/CN={name} root CA"),
        "-days",
        "2",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-out",
        s(&p("ca.pem")),
    ]);
    ec_key(&p("intermediate.key"));
    issue(
        dir,
        "intermediate",
        &format!("/CN={name} intermediate CA"),
        "ca",
        "1",
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n",
    );

    let server_ext = format!(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\nsubjectAltName={SERVER_NAMES}\n"
    );
    ec_key(&p("server-ec.key"));
    issue(
        dir,
        "server-ec",
        "/CN=localhost",
        "intermediate",
        "1",
        &server_ext,
    );
    rsa_key(&p("server-rsa.key"));
    issue(
        dir,
        "server-rsa",
        "/CN=localhost",
        "intermediate",
        "1",
        &server_ext,
    );
    for name in ["server-ec", "server-rsa"] {
        let mut chain = fs::read(p(&format!("{name}.pem"))).expect("read server certificate");
        chain.extend(fs::read(p("intermediate.pem")).expect("read intermediate"));
        fs::write(p(&format!("{name}-chain.pem")), chain).expect("write chain");
    }
    openssl(&[
        "ec",
        "-in",
        s(&p("server-ec.key")),
        "-out",
        s(&p("server-ec-sec1.key")),
    ]);
    openssl(&[
        "rsa",
        "-in",
        s(&p("server-rsa.key")),
        "-traditional",
        "-out",
        s(&p("server-rsa-pkcs1.key")),
    ]);

    ec_key(&p("client.key"));
    issue(
        dir,
        "client",
        "/O=wsecho tests/CN=wsecho test client",
        "ca",
        "1",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
    );

    ec_key(&p("expired.key"));
    issue(dir, "expired", "/CN=localhost", "ca", "-1", &server_ext);

    ec_key(&p("self-signed.key"));
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        s(&p("self-signed.key")),
        "-subj",
        "/CN=localhost",
        "-days",
        "2",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-addext",
        &format!("subjectAltName={SERVER_NAMES}"),
        "-out",
        s(&p("self-signed.pem")),
    ]);

    Certs {
        dir: dir.to_owned(),
        ca: p("ca.pem"),
        server_ec_chain: p("server-ec-chain.pem"),
        server_ec_key: p("server-ec.key"),
        server_ec_key_sec1: p("server-ec-sec1.key"),
        server_rsa_chain: p("server-rsa-chain.pem"),
        server_rsa_key: p("server-rsa.key"),
        server_rsa_key_pkcs1: p("server-rsa-pkcs1.key"),
        client: p("client.pem"),
        client_key: p("client.key"),
        expired: p("expired.pem"),
        expired_key: p("expired.key"),
        self_signed: p("self-signed.pem"),
        self_signed_key: p("self-signed.key"),
    }
}

/// One set for the whole test process, made on first use in `root/PID` (any older set of the
/// same process id is replaced; later calls get that set whatever `root` they name): a set
/// costs a few RSA key generations.
pub fn shared(root: &Path) -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| {
        let dir = root.join(std::process::id().to_string());
        let _ = fs::remove_dir_all(&dir);
        make(&dir)
    })
}

/// The base64 of the SHA-256 of the public key (SubjectPublicKeyInfo, DER) of the private key
/// in `key`: what Chromium's `--ignore-certificate-errors-spki-list` and HPKP pins name.
pub fn spki_sha256_base64(key: &Path) -> String {
    let spki = openssl_out(&["pkey", "-in", s(key), "-pubout", "-outform", "DER"], &[]);
    let digest = openssl_out(&["dgst", "-sha256", "-binary"], &spki);
    let base64 = openssl_out(&["base64", "-A"], &digest);
    String::from_utf8(base64)
        .expect("base64 is ASCII")
        .trim()
        .to_string()
}

/// Issues `dir/NAME.pem` for the key `dir/NAME.key`, signed by `dir/ISSUER.{pem,key}`, valid
/// for `days` days from now (a negative count makes one that has already expired), with the
/// extensions in `ext` (openssl's extension-file syntax).
fn issue(dir: &Path, name: &str, subject: &str, issuer: &str, days: &str, ext: &str) {
    let p = |file: String| dir.join(file);
    let ext_file = p(format!("{name}.ext"));
    fs::write(&ext_file, ext).expect("write the extension file");
    let csr = p(format!("{name}.csr"));
    openssl(&[
        "req",
        "-new",
        "-key",
        s(&p(format!("{name}.key"))),
        "-subj",
        subject,
        "-out",
        s(&csr),
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        s(&csr),
        "-CA",
        s(&p(format!("{issuer}.pem"))),
        "-CAkey",
        s(&p(format!("{issuer}.key"))),
        "-CAcreateserial",
        "-CAserial",
        s(&p(format!("{issuer}.srl"))),
        "-days",
        days,
        "-extfile",
        s(&ext_file),
        "-out",
        s(&p(format!("{name}.pem"))),
    ]);
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl (install the openssl package)");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs openssl with `input` on its stdin; its stdout.
fn openssl_out(args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl (install the openssl package)");
    let mut stdin = child.stdin.take().expect("stdin pipe");
    let data = input.to_vec();
    // On a thread: openssl may fill its stdout pipe before it has read all its input.
    let feeder = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().expect("wait for openssl");
    let _ = feeder.join();
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn s(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}
