//! Positions of a `kelp dev` version's JavaScript, mapped back to the author's files. Its
//! loader evaluates the esbuild bundle with `new Function`, so SpiderMonkey names frames
//! `dev-loader.js line 62 > Function:63:11` (a line of the bundle); the bundle carries its
//! source map on a last `//# kelpSourceMap=<json>` line, and the stderr lines of the call are
//! rewritten with it to `src/index.js:37:11` before they reach the debug stream. (The
//! runtime prints its own record of the stack, so the loader cannot rewrite it in the guest.)

use serde::Deserialize;

/// The line the bundle's source map sits on.
const MAP_MARK: &str = "\n//# kelpSourceMap=";

/// Lines SpiderMonkey puts before a `new Function` body (`function anonymous(require,module,
/// exports\n) {\n`): frame line L is bundle line L − 2.
const FUNCTION_HEADER_LINES: u32 = 2;

#[derive(Deserialize)]
struct RawMap {
    sources: Vec<String>,
    mappings: String,
}

/// A decoded source map of a dev bundle.
pub struct DevSourceMap {
    sources: Vec<String>,
    /// Per generated line: segments (generated column, source, line, column), 0-based.
    lines: Vec<Vec<[i64; 4]>>,
}

/// What to do with one stderr line of a dev version's call.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// Not a frame of the bundle or the loader: keep as is.
    Keep,
    /// A frame of the bundle, at the author's place.
    Rewritten(String),
    /// A frame of the loader or of componentize-js's glue: noise to the author.
    Drop,
}

impl DevSourceMap {
    /// The map a dev source carries, if any.
    pub fn from_dev_source(source: &str) -> Option<Self> {
        let at = source.rfind(MAP_MARK)?;
        let raw: RawMap = serde_json::from_str(source[at + MAP_MARK.len()..].trim()).ok()?;
        Some(Self { sources: raw.sources, lines: decode(&raw.mappings)? })
    }

    /// `src/index.js:37:11` for a 1-based line and column of the bundle.
    fn place(&self, line: u32, column: u32) -> Option<String> {
        let segments = self.lines.get(line.checked_sub(1)? as usize)?;
        let found = segments.iter().take_while(|s| s[0] < i64::from(column)).last()?;
        let source = self.sources.get(usize::try_from(found[1]).ok()?)?;
        Some(format!("{source}:{}:{}", found[2] + 1, found[3] + 1))
    }

    /// Map a stack frame line of the call's stderr.
    pub fn frame(&self, line: &str) -> Frame {
        let trimmed = line.trim_start();
        if let Some(at) = line.find(" > Function:") {
            let Some(start) = line[..at].find('@').map(|i| i + 1) else { return Frame::Keep };
            let mut position = line[at + " > Function:".len()..].split(':');
            let (Some(row), Some(column)) = (position.next(), position.next()) else { return Frame::Keep };
            let (Ok(row), Ok(column)) = (row.trim().parse::<u32>(), column.trim().parse::<u32>()) else {
                return Frame::Keep;
            };
            return match row.checked_sub(FUNCTION_HEADER_LINES).and_then(|row| self.place(row, column)) {
                Some(place) => Frame::Rewritten(format!("{}{place}", &line[..start])),
                None => Frame::Keep,
            };
        }
        let loader_frame = trimmed.split_once('@').is_some_and(|(_, place)| {
            place.starts_with("dev-loader.js:") || place.contains("/sources/initializer.js:")
        });
        if loader_frame {
            Frame::Drop
        } else {
            Frame::Keep
        }
    }
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Source map v3 `mappings`: `;` between generated lines, `,` between segments, each a run
/// of base64 VLQs relative to the previous segment (the column to the previous one on the
/// line).
fn decode(mappings: &str) -> Option<Vec<Vec<[i64; 4]>>> {
    let mut lines = Vec::new();
    let mut state = [0i64; 4];
    for line in mappings.split(';') {
        let mut segments = Vec::new();
        state[0] = 0;
        for segment in line.split(',').filter(|s| !s.is_empty()) {
            let mut fields = Vec::with_capacity(5);
            let (mut value, mut shift) = (0i64, 0u32);
            for byte in segment.bytes() {
                let digit = BASE64.iter().position(|b| *b == byte)? as i64;
                value += (digit & 31) << shift;
                if digit & 32 != 0 {
                    shift += 5;
                    if shift > 60 {
                        return None;
                    }
                } else {
                    fields.push(if value & 1 == 1 { -(value >> 1) } else { value >> 1 });
                    (value, shift) = (0, 0);
                }
            }
            for (slot, delta) in state.iter_mut().zip(&fields) {
                *slot += delta;
            }
            if fields.len() >= 4 {
                segments.push(state);
            }
        }
        lines.push(segments);
    }
    Some(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bundle whose generated line 3 column 5 maps to src/index.js line 2 column 3
    /// (`AAAA` = 0,0,0,0; `KACE` = +5,+1?..): built by hand from the VLQ alphabet.
    fn bundle() -> String {
        // Line 1: nothing; line 2: nothing; line 3: [col 4 → source 0, line 1, col 2].
        let map = serde_json::json!({"version": 3, "sources": ["src/index.js"], "mappings": ";;IACE"});
        format!("var a;\nvar b;\n    thing.explode();\n//# kelpSourceMap={map}\n")
    }

    #[test]
    fn frames_of_the_bundle_point_at_the_authors_file_and_the_loader_s_are_dropped() {
        let map = DevSourceMap::from_dev_source(&bundle()).unwrap();
        // Bundle line 3 is frame line 5 (two header lines); column 5 is 1-based.
        assert_eq!(
            map.frame("  handler@dev-loader.js line 62 > Function:5:5"),
            Frame::Rewritten("  handler@src/index.js:2:3".into())
        );
        assert_eq!(map.frame("  handler@dev-loader.js:136:18"), Frame::Drop);
        assert_eq!(map.frame("  export_handler@/tmp/ab/sources/initializer.js:3115:15"), Frame::Drop);
        assert_eq!(map.frame("no greeting today"), Frame::Keep);
        assert_eq!(map.frame("  handler@dev-loader.js line 62 > Function:99:1"), Frame::Keep, "unmapped stays");
        assert!(DevSourceMap::from_dev_source("var a;\n").is_none());
    }
}
