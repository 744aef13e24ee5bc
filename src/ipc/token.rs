//! The IPC capability token: 32 random bytes the daemon makes at start, writes hex-encoded
//! to `ipc.token` beside its config file (mode 0600, never readable by others even
//! briefly), and requires in every connection's `hello`. Any local process that can read
//! the user's files may talk to the daemon; nothing else (other users, web pages) can.
//!
//! Apps find the file the way the daemon found its config ([`search_paths`]): the file named
//! by `$HGX_IPC_TOKEN_FILE` if set; else `ipc.token` in `$HYPERGOLIX_HOME` alone if set;
//! else in the current directory, `~/.hypergolix`, `/etc/hypergolix`; the first that exists.
//!
//! Calls `config` (its search order) only. The daemon calls [`CapabilityToken::create_file`];
//! the server [`CapabilityToken::verify`]; clients [`find_file`] and
//! [`CapabilityToken::read_path`].

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rand::RngCore;
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

/// The token file's name, in the directory of the config file in use.
pub const TOKEN_FILE_NAME: &str = "ipc.token";
/// Raw token length.
pub const TOKEN_LEN: usize = 32;
/// The environment variable that names the token file itself (apps only).
pub const TOKEN_FILE_ENV: &str = "HGX_IPC_TOKEN_FILE";

/// The token files an app tries, in order (see the module documentation).
pub fn search_paths() -> Vec<PathBuf> {
    paths_from(
        std::env::var_os(TOKEN_FILE_ENV),
        crate::config::search_dirs(),
    )
}

fn paths_from(explicit: Option<std::ffi::OsString>, config_dirs: Vec<PathBuf>) -> Vec<PathBuf> {
    match explicit.filter(|v| !v.is_empty()) {
        Some(file) => vec![PathBuf::from(file)],
        None => config_dirs
            .into_iter()
            .map(|d| d.join(TOKEN_FILE_NAME))
            .collect(),
    }
}

/// The first existing file of [`search_paths`]; `Err` lists every path tried.
pub fn find_file() -> Result<PathBuf, Vec<PathBuf>> {
    first_existing(search_paths())
}

fn first_existing(tried: Vec<PathBuf>) -> Result<PathBuf, Vec<PathBuf>> {
    match tried.iter().find(|p| p.is_file()) {
        Some(p) => Ok(p.clone()),
        None => Err(tried),
    }
}

/// A capability token. `Debug` never prints it; it is wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct CapabilityToken([u8; TOKEN_LEN]);

impl fmt::Debug for CapabilityToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CapabilityToken(..)")
    }
}

impl Drop for CapabilityToken {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl CapabilityToken {
    /// A fresh token from the OS random source.
    pub fn generate() -> CapabilityToken {
        let mut b = [0u8; TOKEN_LEN];
        rand::rngs::OsRng.fill_bytes(&mut b);
        CapabilityToken(b)
    }

    pub fn from_bytes(bytes: [u8; TOKEN_LEN]) -> CapabilityToken {
        CapabilityToken(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; TOKEN_LEN] {
        &self.0
    }

    /// Lower-case hex, as stored in the file.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses the file's content (surrounding whitespace allowed).
    pub fn from_hex(s: &str) -> Option<CapabilityToken> {
        let mut b = [0u8; TOKEN_LEN];
        hex::decode_to_slice(s.trim(), &mut b).ok()?;
        Some(CapabilityToken(b))
    }

    /// Whether `presented` (the 32 raw bytes, or tolerated: the 64 hex characters) is this
    /// token. The comparison of the secret bytes is constant-time.
    pub fn verify(&self, presented: &[u8]) -> bool {
        let mut raw = [0u8; TOKEN_LEN];
        let ok_len = match presented.len() {
            TOKEN_LEN => {
                raw.copy_from_slice(presented);
                true
            }
            n if n == 2 * TOKEN_LEN => hex::decode_to_slice(presented, &mut raw).is_ok(),
            _ => false,
        };
        let equal: bool = self.0.ct_eq(&raw).into();
        raw.zeroize();
        ok_len && equal
    }

    /// The token file's path in `dir`.
    pub fn file_path(dir: &Path) -> PathBuf {
        dir.join(TOKEN_FILE_NAME)
    }

    /// Generates a token and writes it to `dir/ipc.token` (see [`Self::write_file`]).
    pub fn create_file(dir: &Path) -> io::Result<(CapabilityToken, PathBuf)> {
        let token = CapabilityToken::generate();
        let path = token.write_file(dir)?;
        Ok((token, path))
    }

    /// Writes the token to `dir/ipc.token`, replacing a stale file. The file is created
    /// exclusively with mode 0600 (`O_CREAT|O_EXCL`, which also refuses to follow a planted
    /// symlink), so it is never readable by others, not even between create and chmod.
    pub fn write_file(&self, dir: &Path) -> io::Result<PathBuf> {
        let path = Self::file_path(dir);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut file = opts.open(&path)?;
        let mut text = self.to_hex();
        text.push('\n');
        let written = file
            .write_all(text.as_bytes())
            .and_then(|()| file.sync_all());
        text.zeroize();
        written?;
        Ok(path)
    }

    /// Reads `dir/ipc.token`.
    pub fn read_file(dir: &Path) -> io::Result<CapabilityToken> {
        Self::read_path(&Self::file_path(dir))
    }

    /// Reads the token file at `path`.
    pub fn read_path(path: &Path) -> io::Result<CapabilityToken> {
        let mut text = fs::read_to_string(path)?;
        let token = CapabilityToken::from_hex(&text);
        text.zeroize();
        token.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} does not hold a {TOKEN_LEN}-byte hex token",
                    path.display()
                ),
            )
        })
    }

    /// Removes `dir/ipc.token` (at clean shutdown). Missing is fine.
    pub fn remove_file(dir: &Path) -> io::Result<()> {
        match fs::remove_file(Self::file_path(dir)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_raw_hex_and_wrong() {
        let t = CapabilityToken::from_bytes([0xab; 32]);
        assert!(t.verify(&[0xab; 32]));
        assert!(t.verify(t.to_hex().as_bytes()));
        assert!(t.verify(t.to_hex().to_uppercase().as_bytes()));
        assert!(!t.verify(&[0xab; 31]));
        assert!(!t.verify(&[0xab; 33]));
        assert!(!t.verify(&[0xac; 32]));
        assert!(!t.verify(b""));
        assert!(!t.verify(&[b'z'; 64]));
        assert!(!CapabilityToken::from_bytes([0; 32]).verify(&[b'z'; 64]));
        assert_ne!(CapabilityToken::generate(), CapabilityToken::generate());
        assert_eq!(format!("{t:?}"), "CapabilityToken(..)");
    }

    #[test]
    fn file_round_trip_replaces_stale() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TOKEN_FILE_NAME), "stale").unwrap();
        let (t, path) = CapabilityToken::create_file(dir.path()).unwrap();
        assert_eq!(CapabilityToken::read_file(dir.path()).unwrap(), t);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        CapabilityToken::remove_file(dir.path()).unwrap();
        CapabilityToken::remove_file(dir.path()).unwrap();
        assert!(CapabilityToken::read_file(dir.path()).is_err());
        std::fs::write(&path, "not hex").unwrap();
        assert_eq!(
            CapabilityToken::read_file(dir.path()).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn search_paths_follow_the_config_search_and_the_env_override() {
        let dirs = vec![PathBuf::from("/w"), PathBuf::from("/h/.hypergolix")];
        assert_eq!(
            paths_from(None, dirs.clone()),
            vec![
                PathBuf::from("/w/ipc.token"),
                PathBuf::from("/h/.hypergolix/ipc.token")
            ]
        );
        assert_eq!(
            paths_from(Some("".into()), dirs.clone()),
            paths_from(None, dirs.clone()),
            "an empty variable is unset"
        );
        assert_eq!(
            paths_from(Some("/t/tok".into()), dirs),
            vec![PathBuf::from("/t/tok")]
        );
        // The directories are the config's, in its order.
        let cfg: Vec<PathBuf> = crate::config::search_dirs()
            .into_iter()
            .map(|d| d.join(TOKEN_FILE_NAME))
            .collect();
        if std::env::var_os(TOKEN_FILE_ENV).is_none() {
            assert_eq!(search_paths(), cfg);
        }

        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let tried = vec![
            a.path().join(TOKEN_FILE_NAME),
            b.path().join(TOKEN_FILE_NAME),
        ];
        assert_eq!(first_existing(tried.clone()), Err(tried.clone()));
        let (t, path) = CapabilityToken::create_file(b.path()).unwrap();
        assert_eq!(first_existing(tried.clone()), Ok(path.clone()));
        CapabilityToken::create_file(a.path()).unwrap();
        assert_eq!(first_existing(tried.clone()), Ok(tried[0].clone()));
        assert_eq!(CapabilityToken::read_path(&path).unwrap(), t);
    }
}
