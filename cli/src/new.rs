//! `kelp new`: a working extension project from a template carried in the binary.

use std::borrow::Cow;
use std::path::Path;

use anyhow::{bail, Context as _, Result};

/// Languages `kelp new` has a template for.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Lang {
    /// JavaScript (componentize-js).
    Js,
    /// TypeScript (esbuild, then componentize-js).
    Ts,
    /// Python (componentize-py).
    Python,
    /// A hand-written core module in WAT (wit-component).
    Wat,
}

/// (path in the project, template text).
fn files(lang: Lang) -> Result<Vec<(&'static str, Cow<'static, str>)>> {
    let readme = ("README.md", include_str!("../templates/README.md").into());
    // The typings of every host interface, generated from the contract this kelp runs.
    let typings = || -> Result<Cow<'static, str>> {
        Ok(kelp_runtime::devtools::typings::declarations("kelp:extension/runner")?.into())
    };
    Ok(match lang {
        Lang::Js => vec![
            ("manifest.json", include_str!("../templates/js/manifest.json").into()),
            ("src/index.js", include_str!("../templates/js/src/index.js").into()),
            ("src/alga.d.ts", typings()?),
            ("jsconfig.json", include_str!("../templates/js/jsconfig.json").into()),
            readme,
        ],
        Lang::Ts => vec![
            ("manifest.json", include_str!("../templates/ts/manifest.json").into()),
            ("src/index.ts", include_str!("../templates/ts/src/index.ts").into()),
            ("src/alga.d.ts", typings()?),
            ("tsconfig.json", include_str!("../templates/ts/tsconfig.json").into()),
            readme,
        ],
        Lang::Python => vec![
            ("manifest.json", include_str!("../templates/python/manifest.json").into()),
            ("app.py", include_str!("../templates/python/app.py").into()),
            readme,
        ],
        Lang::Wat => vec![
            ("manifest.json", include_str!("../templates/wat/manifest.json").into()),
            ("hello.wat", include_str!("../../examples/wat-hello/hello.wat").into()),
            readme,
        ],
    })
}

/// An extension name from a directory name: `com.example.<name>`, lower-case, with
/// characters a manifest name does not take replaced by `-`.
pub fn extension_name(dir: &Path) -> Result<String> {
    let base = dir
        .file_name()
        .context("the project directory needs a name")?
        .to_string_lossy()
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' })
        .collect::<String>();
    let base = base.trim_matches('-');
    if base.is_empty() {
        bail!("{}: cannot make an extension name from this directory name", dir.display());
    }
    Ok(format!("com.example.{base}"))
}

/// Write the template for `lang` into `dir` (which must not exist or be empty).
pub fn run(dir: &Path, lang: Lang, name: Option<String>) -> Result<()> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!("{} already exists and is not empty; pick a new directory", dir.display());
    }
    let name = match name {
        Some(n) => n,
        None => extension_name(dir)?,
    };
    let (lang_name, source_note) = match lang {
        Lang::Js => (
            "JavaScript",
            "`src/index.js` is the guest: `handler(request)` returns the response; `src/alga.d.ts` (with `jsconfig.json`) gives editors the types of every host interface.",
        ),
        Lang::Ts => (
            "TypeScript",
            "`src/index.ts` is the guest (bundled with esbuild, so relative imports and npm packages work); `src/alga.d.ts` types every host interface; `kelp build` type-checks the project first (`--no-check` skips it).",
        ),
        Lang::Python => (
            "Python",
            "`app.py` is the guest: `WitWorld.handler(request)` returns the response; `kelp build` generates the `wit_world` bindings it imports.",
        ),
        Lang::Wat => ("WAT", "`hello.wat` is a core module written against the canonical ABI; `kelp build` wraps it into a component."),
    };
    let shown_dir = dir.display().to_string();
    for (path, template) in files(lang)? {
        let text = template
            .replace("{{name}}", &name)
            .replace("{{publisher}}", "Example publisher")
            .replace("{{lang}}", lang_name)
            .replace("{{dir}}", &shown_dir)
            .replace("{{source_note}}", source_note);
        let target = dir.join(path);
        std::fs::create_dir_all(target.parent().unwrap_or(dir))?;
        std::fs::write(&target, text).with_context(|| format!("writing {}", target.display()))?;
    }
    println!("created {shown_dir} ({lang_name}): extension {name}");
    println!("next: kelp build {shown_dir} && kelp publish {shown_dir} && kelp install {name}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_directory() {
        assert_eq!(extension_name(Path::new("/tmp/Hello JS")).unwrap(), "com.example.hello-js");
        assert_eq!(extension_name(Path::new("hello_js")).unwrap(), "com.example.hello-js");
        assert!(extension_name(Path::new("/tmp/___")).is_err());
    }

    #[test]
    fn every_template_has_a_manifest_kelp_build_accepts() {
        for lang in [Lang::Js, Lang::Ts, Lang::Python, Lang::Wat] {
            let dir = tempfile::tempdir().unwrap();
            let project = dir.path().join("hello");
            run(&project, lang, None).unwrap();
            let checked = kelp_runtime::devtools::project::check_manifest(&project).unwrap();
            assert_eq!(checked.manifest.name, "com.example.hello");
            assert!(checked.warnings.is_empty(), "{lang:?}: {:?}", checked.warnings);
            kelp_runtime::devtools::project::find_source(&project).unwrap();
            assert!(run(&project, lang, None).is_err(), "a non-empty directory is refused");
        }
    }
}
