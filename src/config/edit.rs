//! # Editing `hypergolix.yml` in place
//!
//! `hgxd config` and the account's first start change a few values of a file the user may
//! have written and commented by hand. [`ConfigText`] edits the text itself, line by line, so
//! that everything it is not asked to change stays byte for byte: comments, blank lines, key
//! order, quoting, other sections.
//!
//! What is preserved: in a section written in block style (`process:` and its keys on the
//! following lines, the default layout) every line but the changed key's, and that line's
//! trailing comment when the old and the new value are both one-line scalars. A new key is
//! added after the section's last line; a new remote after the last remote, in the same
//! indentation. What is not: a section written in flow style (`process: {ipc_port: 7772}`)
//! or as a scalar is rewritten in block style, and comments inside it are lost; a replaced
//! or removed remote loses the comments between its own lines.
//!
//! Every edit is checked before anything is written: the new text must parse, with the same
//! loader the daemon uses, into exactly the old configuration with the one change applied
//! ([`ConfigText::verified`]). A layout this editor does not understand is refused with an
//! error instead of being written wrongly.
//!
//! Owns: the text edits and that check. Calls: `yaml-rust2` (for the sections it rewrites),
//! the parent module's loader.

use std::path::Path;

use yaml_rust2::yaml::{Hash, Yaml};
use yaml_rust2::{YamlEmitter, YamlLoader};

use super::{Config, ConfigError, Remote};

/// A value to write, already in YAML syntax.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// One scalar (`7772`, `'text'`, `debug`).
    Scalar(String),
    /// A mapping of scalars, written as an indented block.
    Map(Vec<(String, String)>),
}

/// A YAML string scalar: single-quoted, so that no text can turn into another type or syntax.
pub fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The text of a config file, being edited.
#[derive(Clone, Debug)]
pub struct ConfigText {
    lines: Vec<String>,
}

/// How a top-level key's value is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Style {
    /// Nothing after the colon: the value is on the following, indented lines (or absent).
    Block,
    /// Anything else on the key's line (`{…}`, `[…]`, `null`, an anchor...).
    Inline,
}

/// Where a top-level key's lines are.
#[derive(Clone, Copy, Debug)]
struct Section {
    /// The `key:` line.
    key_line: usize,
    /// One past the section's last content line (comments and blank lines after it belong
    /// to what follows).
    end: usize,
    style: Style,
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// Neither blank nor a comment.
fn is_content(line: &str) -> bool {
    let t = line.trim_start();
    !t.is_empty() && !t.starts_with('#')
}

/// `key` if `line` (after its indentation) is `key:` followed by nothing, a space or a tab.
fn key_of(line: &str) -> Option<&str> {
    let t = line.trim_start_matches(' ');
    let colon = t.find(':')?;
    let key = &t[..colon];
    let rest = &t[colon + 1..];
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    (plain && (rest.is_empty() || rest.starts_with([' ', '\t']))).then_some(key)
}

/// What follows `key:` on its line, without a trailing comment (` #…`) or surrounding space.
fn inline_value(line: &str) -> &str {
    let t = line.trim_start_matches(' ');
    let after = t.find(':').map_or("", |c| &t[c + 1..]);
    let after = after.trim_start();
    if after.starts_with('#') {
        return "";
    }
    match after.find(" #") {
        Some(at) if !after.starts_with(['\'', '"']) => after[..at].trim_end(),
        _ => after.trim_end(),
    }
}

/// The trailing ` # comment` of a line whose value is a plain scalar, if any.
fn trailing_comment(line: &str) -> Option<&str> {
    let value = inline_value(line);
    if value.starts_with(['\'', '"']) {
        return None;
    }
    let t = line.trim_start_matches(' ');
    let after_colon = t.find(':').map(|c| c + 1)?;
    let rest = &t[after_colon..];
    let at = rest.find(" #")?;
    // Keep the spaces before the `#` as they were.
    let start = rest[..=at].trim_end().len();
    Some(&rest[start..])
}

/// A sequence item line (`- …` or a lone `-`) at exactly `at` spaces.
fn is_item_at(line: &str, at: usize) -> bool {
    indent(line) == at && {
        let t = &line[at..];
        t == "-" || t.starts_with("- ")
    }
}

impl ConfigText {
    pub fn new(text: &str) -> ConfigText {
        ConfigText {
            lines: text.lines().map(str::to_owned).collect(),
        }
    }

    /// The text, ending with a newline.
    pub fn text(&self) -> String {
        let mut s = self.lines.join("\n");
        s.push('\n');
        s
    }

    fn section(&self, key: &str) -> Option<Section> {
        let key_line = self
            .lines
            .iter()
            .position(|l| indent(l) == 0 && key_of(l) == Some(key))?;
        let mut end = key_line + 1;
        for (i, line) in self.lines.iter().enumerate().skip(key_line + 1) {
            if !is_content(line) {
                continue;
            }
            // A sequence may sit at the key's own indentation (`remotes:\n- host: …`).
            if indent(line) == 0 && !is_item_at(line, 0) {
                break;
            }
            end = i + 1;
        }
        let style = if inline_value(&self.lines[key_line]).is_empty() {
            Style::Block
        } else {
            Style::Inline
        };
        Some(Section {
            key_line,
            end,
            style,
        })
    }

    /// Sets `section.key` (adding the section or the key as needed).
    pub fn set(&mut self, section: &str, key: &str, value: &Value) -> Result<(), ConfigError> {
        let Some(sec) = self.section(section) else {
            let mut new = vec![format!("{section}:")];
            new.extend(render_key(2, key, value));
            self.append(new);
            return Ok(());
        };
        if sec.style == Style::Inline {
            return self.rewrite_section(section, sec, |v| {
                let mut map = match v {
                    Yaml::Hash(h) => h,
                    Yaml::Null => Hash::new(),
                    _ => return Err(format!("{section} is not a mapping")),
                };
                map.insert(Yaml::String(key.to_owned()), to_yaml(value)?);
                Ok(Yaml::Hash(map))
            });
        }
        let body = sec.key_line + 1..sec.end;
        let child_indent = self.lines[body.clone()]
            .iter()
            .find(|l| is_content(l))
            .map_or(2, |l| indent(l));
        if child_indent == 0 {
            return Err(layout(format!("{section} is not a mapping")));
        }
        let found = body.clone().find(|&i| {
            indent(&self.lines[i]) == child_indent && key_of(&self.lines[i]) == Some(key)
        });
        let Some(at) = found else {
            self.lines
                .splice(sec.end..sec.end, render_key(child_indent, key, value));
            return Ok(());
        };
        // The key's own lines: up to the next content line at its indentation or less.
        let mut until = at + 1;
        for i in at + 1..sec.end {
            if is_content(&self.lines[i]) && indent(&self.lines[i]) <= child_indent {
                break;
            }
            if is_content(&self.lines[i]) {
                until = i + 1;
            }
        }
        let old = &self.lines[at];
        let new = match value {
            Value::Scalar(s) if until == at + 1 && !inline_value(old).is_empty() => {
                let comment = trailing_comment(old).unwrap_or("");
                vec![format!("{}{key}: {s}{comment}", " ".repeat(child_indent))]
            }
            _ => render_key(child_indent, key, value),
        };
        self.lines.splice(at..until, new);
        Ok(())
    }

    /// Adds `remote` after the last remote, or replaces the entry `index` (counted in the
    /// file's `remotes` list) with it.
    pub fn put_remote(
        &mut self,
        remote: &Remote,
        replace: Option<usize>,
    ) -> Result<(), ConfigError> {
        let Some(sec) = self.section("remotes") else {
            let mut new = vec!["remotes:".to_owned()];
            new.extend(render_remote(2, remote));
            self.append(new);
            return Ok(());
        };
        if sec.style == Style::Inline {
            return self.rewrite_remotes(sec, |list| {
                let item = remote_yaml(remote);
                match replace {
                    Some(i) if i < list.len() => list[i] = item,
                    Some(_) => return Err("no such remote".into()),
                    None => list.push(item),
                }
                Ok(())
            });
        }
        let items = self.items(sec)?;
        let dash = items
            .first()
            .map_or(2, |&(start, _)| indent(&self.lines[start]));
        let new = render_remote(dash, remote);
        match replace {
            Some(i) => {
                let &(start, end) = items
                    .get(i)
                    .ok_or_else(|| layout("no such remote".into()))?;
                self.lines.splice(start..end, new);
            }
            None => {
                let at = items.last().map_or(sec.key_line + 1, |&(_, end)| end);
                self.lines.splice(at..at, new);
            }
        }
        Ok(())
    }

    /// Removes entry `index` of the `remotes` list.
    pub fn remove_remote(&mut self, index: usize) -> Result<(), ConfigError> {
        let sec = self
            .section("remotes")
            .ok_or_else(|| layout("no remotes section".into()))?;
        if sec.style == Style::Inline {
            return self.rewrite_remotes(sec, |list| {
                if index >= list.len() {
                    return Err("no such remote".into());
                }
                list.remove(index);
                Ok(())
            });
        }
        let items = self.items(sec)?;
        let &(start, end) = items
            .get(index)
            .ok_or_else(|| layout("no such remote".into()))?;
        self.lines.drain(start..end);
        if items.len() == 1 {
            // An empty block would read as `null`: say "no remotes" explicitly.
            let line = &self.lines[sec.key_line];
            let comment = line.find(" #").map_or("", |at| &line[at..]).to_owned();
            self.lines[sec.key_line] = format!("remotes: []{comment}");
        }
        Ok(())
    }

    /// The line ranges (start, one past the last content line) of the items of a block
    /// sequence section.
    fn items(&self, sec: Section) -> Result<Vec<(usize, usize)>, ConfigError> {
        let body = sec.key_line + 1..sec.end;
        let Some(first) = body.clone().find(|&i| is_content(&self.lines[i])) else {
            return Ok(Vec::new());
        };
        let dash = indent(&self.lines[first]);
        if !is_item_at(&self.lines[first], dash) {
            return Err(layout("remotes is not a list".into()));
        }
        let mut items: Vec<(usize, usize)> = Vec::new();
        for i in body {
            let line = &self.lines[i];
            if !is_content(line) {
                continue;
            }
            if is_item_at(line, dash) {
                items.push((i, i + 1));
            } else if indent(line) > dash {
                if let Some(last) = items.last_mut() {
                    last.1 = i + 1;
                }
            } else {
                return Err(layout(format!("unexpected line {}: {line:?}", i + 1)));
            }
        }
        Ok(items)
    }

    fn append(&mut self, new: Vec<String>) {
        while self.lines.last().is_some_and(|l| l.trim().is_empty()) {
            self.lines.pop();
        }
        self.lines.extend(new);
    }

    fn rewrite_remotes(
        &mut self,
        sec: Section,
        change: impl FnOnce(&mut Vec<Yaml>) -> Result<(), String>,
    ) -> Result<(), ConfigError> {
        self.rewrite_section("remotes", sec, |v| {
            let mut list = match v {
                Yaml::Array(a) => a,
                Yaml::Null => Vec::new(),
                _ => return Err("remotes is not a list".into()),
            };
            change(&mut list)?;
            Ok(Yaml::Array(list))
        })
    }

    /// Replaces a whole section by its changed value, written in block style.
    fn rewrite_section(
        &mut self,
        key: &str,
        sec: Section,
        change: impl FnOnce(Yaml) -> Result<Yaml, String>,
    ) -> Result<(), ConfigError> {
        let docs = YamlLoader::load_from_str(&self.text())
            .map_err(|e| ConfigError::Invalid(format!("not valid YAML: {e}")))?;
        let old = match docs.first() {
            Some(Yaml::Hash(h)) => h
                .get(&Yaml::String(key.to_owned()))
                .cloned()
                .unwrap_or(Yaml::Null),
            _ => return Err(layout("the file is not a mapping".into())),
        };
        let new = change(old).map_err(layout)?;
        let mut one = Hash::new();
        one.insert(Yaml::String(key.to_owned()), new);
        let mut out = String::new();
        YamlEmitter::new(&mut out)
            .dump(&Yaml::Hash(one))
            .map_err(|e| layout(e.to_string()))?;
        let body = out.strip_prefix("---\n").unwrap_or(&out);
        let new_lines: Vec<String> = body.lines().map(str::to_owned).collect();
        self.lines.splice(sec.key_line..sec.end, new_lines);
        Ok(())
    }

    /// Checks the edit: `self` must parse into `expected` (relative paths resolved against
    /// `base`). Returns the text to write.
    pub fn verified(&self, expected: &Config, base: &Path) -> Result<String, ConfigError> {
        let text = self.text();
        let got = Config::from_yaml(&text, base)
            .map_err(|e| layout(format!("the edited text does not parse: {e}")))?;
        let same = |c: &Config| {
            let mut c = c.clone();
            c.source = None;
            c.base_dir = base.to_path_buf();
            c
        };
        if same(&got) != same(expected) {
            return Err(layout(
                "the edited text would change more than asked".into(),
            ));
        }
        Ok(text)
    }
}

fn layout(why: String) -> ConfigError {
    ConfigError::Invalid(format!(
        "cannot edit this file's layout safely ({why}); edit it by hand"
    ))
}

fn render_key(indent: usize, key: &str, value: &Value) -> Vec<String> {
    let pad = " ".repeat(indent);
    match value {
        Value::Scalar(s) => vec![format!("{pad}{key}: {s}")],
        Value::Map(entries) => {
            let mut out = vec![format!("{pad}{key}:")];
            out.extend(entries.iter().map(|(k, v)| format!("{pad}  {k}: {v}")));
            out
        }
    }
}

/// The lines of one `remotes` entry, its dash at `dash` spaces.
fn render_remote(dash: usize, r: &Remote) -> Vec<String> {
    let pad = " ".repeat(dash + 2);
    let mut out = vec![
        format!("{}- host: {}", " ".repeat(dash), quoted(&r.host)),
        format!("{pad}port: {}", r.port),
        format!("{pad}tls: {}", r.tls),
    ];
    if let Some(ca) = &r.ca_file {
        out.push(format!("{pad}ca_file: {}", quoted(&ca.to_string_lossy())));
    }
    if !r.failover.is_empty() {
        let list: Vec<String> = r.failover.iter().map(|f| quoted(f)).collect();
        out.push(format!("{pad}failover: [{}]", list.join(", ")));
    }
    out
}

fn remote_yaml(r: &Remote) -> Yaml {
    let mut h = Hash::new();
    let s = |v: &str| Yaml::String(v.to_owned());
    h.insert(s("host"), s(&r.host));
    h.insert(s("port"), Yaml::Integer(r.port.into()));
    h.insert(s("tls"), Yaml::Boolean(r.tls));
    if let Some(ca) = &r.ca_file {
        h.insert(s("ca_file"), s(&ca.to_string_lossy()));
    }
    if !r.failover.is_empty() {
        let list = r.failover.iter().map(|f| s(f)).collect();
        h.insert(s("failover"), Yaml::Array(list));
    }
    Yaml::Hash(h)
}

/// A [`Value`] as a yaml-rust2 node (its scalars parsed as YAML, so quoting is undone).
fn to_yaml(value: &Value) -> Result<Yaml, String> {
    let scalar = |s: &str| -> Result<Yaml, String> {
        YamlLoader::load_from_str(s)
            .map_err(|e| e.to_string())?
            .into_iter()
            .next()
            .ok_or_else(|| format!("empty value {s:?}"))
    };
    match value {
        Value::Scalar(s) => scalar(s),
        Value::Map(entries) => {
            let mut h = Hash::new();
            for (k, v) in entries {
                h.insert(Yaml::String(k.clone()), scalar(v)?);
            }
            Ok(Yaml::Hash(h))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(host: &str, port: u16, tls: bool) -> Remote {
        Remote {
            host: host.into(),
            port,
            tls,
            ca_file: None,
            failover: Vec::new(),
        }
    }

    fn check(text: &ConfigText, expected: &Config) -> String {
        text.verified(expected, Path::new("/base")).unwrap()
    }

    fn parse(text: &str) -> Config {
        Config::from_yaml(text, Path::new("/base")).unwrap()
    }

    const COMMENTED: &str = "# my daemon\nprocess:\n  # the port apps use\n  ipc_port: 7000  # not 7772\n  \
        logdir: ./logs\n\n# where objects go\nremotes:\n  # office\n  - host: a.example\n    port: 1\n    \
        tls: false\n  - {host: b.example, port: 2}\n\ninstrumentation:\n  verbosity: info\n";

    #[test]
    fn block_edits_keep_every_other_byte() {
        let before = parse(COMMENTED);
        let mut t = ConfigText::new(COMMENTED);
        t.set("process", "ipc_port", &Value::Scalar("7800".into()))
            .unwrap();
        let mut want = before.clone();
        want.process.ipc_port = 7800;
        let out = check(&t, &want);
        assert_eq!(
            out,
            COMMENTED.replace("ipc_port: 7000  # not 7772", "ipc_port: 7800  # not 7772")
        );

        let mut t = ConfigText::new(COMMENTED);
        t.put_remote(&remote("c.example", 3, true), None).unwrap();
        let mut want = before.clone();
        want.remotes.push(remote("c.example", 3, true));
        let out = check(&t, &want);
        assert_eq!(
            out,
            COMMENTED.replace(
                "port: 2}\n",
                "port: 2}\n  - host: 'c.example'\n    port: 3\n    tls: true\n"
            )
        );

        // A cluster remote keeps its failover front-ends, in block and inline lists.
        let mut cluster = remote("a.example", 1, false);
        cluster.failover = vec!["b.example:2".into(), "[::1]:3".into()];
        let mut t = ConfigText::new(COMMENTED);
        t.put_remote(&cluster, Some(0)).unwrap();
        let mut want = before.clone();
        want.remotes[0] = cluster.clone();
        assert!(check(&t, &want).contains("    failover: ['b.example:2', '[::1]:3']\n"));
        let inline = "remotes: [{host: x.example, port: 1}]\n";
        let mut t = ConfigText::new(inline);
        t.put_remote(&cluster, Some(0)).unwrap();
        check(
            &t,
            &parse(&format!(
                "remotes:\n{}\n",
                render_remote(2, &cluster).join("\n")
            )),
        );

        let mut t = ConfigText::new(COMMENTED);
        t.remove_remote(0).unwrap();
        let mut want = before.clone();
        want.remotes.remove(0);
        let out = check(&t, &want);
        assert_eq!(
            out,
            COMMENTED.replace("  - host: a.example\n    port: 1\n    tls: false\n", "")
        );
        t.remove_remote(0).unwrap();
        want.remotes.clear();
        assert!(check(&t, &want).contains("remotes: []\n"));

        // A new key goes after the section's last line; a new section at the end.
        let mut t = ConfigText::new(COMMENTED);
        t.set("instrumentation", "debug", &Value::Scalar("true".into()))
            .unwrap();
        t.set(
            "user",
            "scrypt",
            &Value::Map(vec![
                ("log_n".into(), "10".into()),
                ("r".into(), "8".into()),
                ("p".into(), "1".into()),
            ]),
        )
        .unwrap();
        let mut want = before.clone();
        want.instrumentation.debug = true;
        want.user.scrypt = Some(super::super::ScryptConfig {
            log_n: 10,
            r: 8,
            p: 1,
        });
        let out = check(&t, &want);
        assert!(out.starts_with(COMMENTED.trim_end()), "{out}");
        assert!(out.ends_with(
            "  verbosity: info\n  debug: true\nuser:\n  scrypt:\n    log_n: 10\n    r: 8\n    p: 1\n"
        ));
        // Replacing a nested mapping replaces all of its lines.
        let mut t = ConfigText::new(&out);
        t.set(
            "user",
            "scrypt",
            &Value::Map(vec![
                ("log_n".into(), "14".into()),
                ("r".into(), "8".into()),
                ("p".into(), "1".into()),
            ]),
        )
        .unwrap();
        want.user.scrypt.as_mut().unwrap().log_n = 14;
        assert_eq!(check(&t, &want), out.replace("log_n: 10", "log_n: 14"));
    }

    #[test]
    fn flow_sections_are_rewritten_in_block_style() {
        let text = "# demo\nprocess: {ghidcache: ./g, ipc_port: 7781}\nremotes: [{host: 127.0.0.1, port: 7770, tls: false}]\n";
        let before = parse(text);
        let mut t = ConfigText::new(text);
        t.set("process", "ipc_port", &Value::Scalar("7790".into()))
            .unwrap();
        t.put_remote(&remote("::1", 7771, true), None).unwrap();
        let mut want = before.clone();
        want.process.ipc_port = 7790;
        want.remotes.push(remote("::1", 7771, true));
        let out = check(&t, &want);
        assert!(out.starts_with("# demo\nprocess:\n"), "{out}");
        let mut t = ConfigText::new(&out);
        t.remove_remote(0).unwrap();
        want.remotes.remove(0);
        check(&t, &want);
    }

    #[test]
    fn sequences_at_the_keys_indentation_and_empty_files() {
        let text = "remotes:\n- host: a\n  port: 1\n# end\n";
        let mut t = ConfigText::new(text);
        t.put_remote(&remote("b", 2, false), None).unwrap();
        let mut want = parse(text);
        want.remotes.push(remote("b", 2, false));
        assert_eq!(
            check(&t, &want),
            "remotes:\n- host: a\n  port: 1\n- host: 'b'\n  port: 2\n  tls: false\n# end\n"
        );

        let mut t = ConfigText::new("");
        t.put_remote(&remote("b", 2, false), None).unwrap();
        t.set("process", "ipc_port", &Value::Scalar("1".into()))
            .unwrap();
        let mut want = Config::default();
        want.remotes.push(remote("b", 2, false));
        want.process.ipc_port = 1;
        let want = {
            let mut w = want;
            w.resolve_paths(Path::new("/base"));
            w
        };
        check(&t, &want);
    }

    #[test]
    fn a_wrong_edit_is_refused_not_written() {
        let text = "process:\n  ipc_port: 7000\n";
        let mut t = ConfigText::new(text);
        t.set("process", "ipc_port", &Value::Scalar("7001".into()))
            .unwrap();
        // Expecting something else than what the text now says: refused.
        let e = t.verified(&parse(text), Path::new("/base")).unwrap_err();
        assert!(e.to_string().contains("edit it by hand"), "{e}");
        // A quoted value that would change type is caught the same way.
        let mut t = ConfigText::new(text);
        t.set("process", "ipc_port", &Value::Scalar("'x'".into()))
            .unwrap();
        assert!(t.verified(&parse(text), Path::new("/base")).is_err());
    }
}
