//! Build components from WebAssembly text with `wit-component`: the WAT example, test
//! fixtures and `kelp build` for hand-written guests. The guest contract is compiled into the
//! binary, so this works without the source tree.

use anyhow::{Context as _, Result};
use wit_component::{ComponentEncoder, StringEncoding};
use wit_parser::Resolve;

/// `wit/deps/alga/extension.wit`.
pub const ALGA_WIT: &str = include_str!("../../wit/deps/alga/extension.wit");
/// `wit/kelp.wit`.
pub const KELP_WIT: &str = include_str!("../../wit/kelp.wit");

/// The resolved guest contract (both packages) and the package ids.
pub fn contract() -> Result<(Resolve, Vec<wit_parser::PackageId>)> {
    let mut resolve = Resolve::default();
    let alga = resolve.push_str("alga-extension.wit", ALGA_WIT).context("parsing the alga:extension WIT")?;
    let kelp = resolve.push_str("kelp.wit", KELP_WIT).context("parsing the kelp:extension WIT")?;
    Ok((resolve, vec![alga, kelp]))
}

/// Turn a core module (text or binary) targeting `world` (`alga:extension/runner` or
/// `kelp:extension/runner`) into a component. The module exports `handler`, `memory` and
/// `cabi_realloc` with the canonical ABI, and imports what it uses from the world's
/// interfaces by their full names (e.g. `alga:extension/logging`).
pub fn component_from_wat(core: &str, world: &str) -> Result<Vec<u8>> {
    let mut module = wat::parse_str(core).context("parsing the core module")?;
    let (resolve, packages) = contract()?;
    let world_id = resolve.select_world(&packages, Some(world)).with_context(|| format!("world {world}"))?;
    wit_component::embed_component_metadata(&mut module, &resolve, world_id, StringEncoding::UTF8)?;
    ComponentEncoder::default().module(&module)?.validate(true).encode().map_err(|e| {
        // An import of an interface the world lacks: say which interfaces there are.
        if format!("{e:#}").contains("requires an import interface named") {
            let world = &resolve.worlds[world_id];
            let mut names: Vec<String> = world
                .imports
                .keys()
                .map(|key| resolve.name_world_key(key))
                .filter(|name| !name.ends_with("/types"))
                .collect();
            names.sort();
            e.context(format!("the interfaces of {} are: {}", world.name, names.join(", ")))
        } else {
            e
        }
        .context("encoding the component")
    })
}
