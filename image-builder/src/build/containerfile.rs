//! Containerfile (Dockerfile) parsing: lines joined at `\`, comments, the JSON (exec) and shell
//! forms, flags, stages, and variable expansion (`$V`, `${V}`, `${V:-default}`, `${V:+alt}`).
//!
//! Every instruction this runtime does not carry out is an error naming its line: nothing is
//! skipped silently.

use std::collections::BTreeMap;

/// A Containerfile that cannot be carried out: the message names the line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(String);

pub type Result<T> = std::result::Result<T, Error>;

/// A command in exec form (JSON array) or shell form (one string for the shell).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Exec(Vec<String>),
    Shell(String),
}

/// One instruction, with the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    pub line: usize,
    /// The instruction as written (one line), for messages, history and the cache key.
    pub text: String,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Run(Command),
    /// COPY or ADD: sources, destination, `--from`, `--chown`, and whether it is ADD (which
    /// unpacks local tar archives).
    Copy {
        sources: Vec<String>,
        dest: String,
        from: Option<String>,
        chown: Option<String>,
        add: bool,
    },
    Env(Vec<(String, String)>),
    Arg(String, Option<String>),
    Workdir(String),
    User(String),
    Entrypoint(Command),
    Cmd(Command),
    Label(Vec<(String, String)>),
    Expose(Vec<String>),
    StopSignal(String),
    Shell(Vec<String>),
    Volume(Vec<String>),
}

/// A stage: `FROM image [AS name]` and what follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub line: usize,
    pub from: String,
    pub name: Option<String>,
    pub instructions: Vec<Instruction>,
}

/// A parsed Containerfile: the ARGs before the first FROM, and the stages.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Containerfile {
    pub global_args: Vec<(String, Option<String>)>,
    pub stages: Vec<Stage>,
}

fn err(line: usize, msg: impl std::fmt::Display) -> Error {
    Error(format!("Containerfile line {line}: {msg}"))
}

/// Joins continued lines: (first line number, text).
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let trimmed = raw.trim();
        if current.is_none() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        // Comment lines inside a continued instruction are dropped, as docker does.
        if current.is_some() && trimmed.starts_with('#') {
            continue;
        }
        let (body, continued) = match trimmed.strip_suffix('\\') {
            Some(b) => (b, true),
            None => (trimmed, false),
        };
        match &mut current {
            Some((_, acc)) => {
                acc.push(' ');
                acc.push_str(body.trim());
            }
            None => current = Some((n, body.trim().to_string())),
        }
        if !continued && let Some(done) = current.take() {
            out.push(done);
        }
    }
    out.extend(current);
    out
}

fn command(line: usize, rest: &str) -> Result<Command> {
    let r = rest.trim();
    if r.starts_with('[')
        && let Ok(v) = serde_json::from_str::<Vec<String>>(r)
    {
        if v.is_empty() {
            return Err(err(line, "an empty command"));
        }
        return Ok(Command::Exec(v));
    }
    if r.is_empty() {
        return Err(err(line, "a command is missing"));
    }
    if r.contains("<<")
        && r.split_whitespace().any(|w| {
            w.starts_with("<<")
                && w.len() > 2
                && w[2..]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '"' || c == '\'')
        })
    {
        return Err(err(line, "heredocs are not supported"));
    }
    Ok(Command::Shell(r.to_string()))
}

/// Splits `--flag=value` words off the front.
fn flags(line: usize, rest: &str, allowed: &[&str]) -> Result<(BTreeMap<String, String>, String)> {
    let mut out = BTreeMap::new();
    let mut rest = rest.trim_start();
    while let Some(f) = rest.strip_prefix("--") {
        let end = f.find(char::is_whitespace).unwrap_or(f.len());
        let word = &f[..end];
        let (k, v) = word.split_once('=').unwrap_or((word, "true"));
        if !allowed.contains(&k) {
            return Err(err(line, format!("the flag --{k} is not supported")));
        }
        out.insert(k.to_string(), v.to_string());
        rest = f[end..].trim_start();
    }
    Ok((out, rest.to_string()))
}

/// Words, honouring double and single quotes and backslash escapes.
fn words(line: usize, s: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') | (None, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(err(line, "an unclosed quote"));
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// `K=V K2="v 2"` pairs, or the old `K value with spaces` form of ENV/LABEL.
fn pairs(line: usize, rest: &str) -> Result<Vec<(String, String)>> {
    let ws = words(line, rest)?;
    if ws.is_empty() {
        return Err(err(line, "a name is missing"));
    }
    if !ws[0].contains('=') {
        let value = rest.trim()[rest
            .trim()
            .find(char::is_whitespace)
            .unwrap_or(rest.trim().len())..]
            .trim()
            .to_string();
        return Ok(vec![(ws[0].clone(), value)]);
    }
    ws.into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(err(line, format!("{w:?} is not NAME=value"))),
        })
        .collect()
}

/// Parses a Containerfile.
pub fn parse(text: &str) -> Result<Containerfile> {
    let mut file = Containerfile::default();
    for (line, l) in logical_lines(text) {
        let (word, rest) = match l.find(char::is_whitespace) {
            Some(i) => (&l[..i], l[i..].trim()),
            None => (l.as_str(), ""),
        };
        let keyword = word.to_ascii_uppercase();
        if keyword == "FROM" {
            let (_, rest) = flags(line, rest, &["platform"])?;
            let ws = words(line, &rest)?;
            let (from, name) = match ws.as_slice() {
                [image] => (image.clone(), None),
                [image, as_, name] if as_.eq_ignore_ascii_case("as") => {
                    (image.clone(), Some(name.to_ascii_lowercase()))
                }
                _ => return Err(err(line, "FROM takes an image and an optional AS name")),
            };
            file.stages.push(Stage {
                line,
                from,
                name,
                instructions: Vec::new(),
            });
            continue;
        }
        let kind = match keyword.as_str() {
            "RUN" => {
                let (_, rest) = flags(line, rest, &[])?;
                Kind::Run(command(line, &rest)?)
            }
            "COPY" | "ADD" => {
                let add = keyword == "ADD";
                let allowed: &[&str] = if add { &["chown"] } else { &["chown", "from"] };
                let (f, rest) = flags(line, rest, allowed)?;
                let mut parts = match command(line, &rest)? {
                    Command::Exec(v) => v,
                    Command::Shell(s) => words(line, &s)?,
                };
                if parts.len() < 2 {
                    return Err(err(
                        line,
                        format!("{keyword} needs a source and a destination"),
                    ));
                }
                let dest = parts.pop().unwrap_or_default();
                if add && parts.iter().any(|s| s.contains("://")) {
                    return Err(err(
                        line,
                        "ADD of a URL is not supported: download it in a RUN step",
                    ));
                }
                Kind::Copy {
                    sources: parts,
                    dest,
                    from: f.get("from").cloned(),
                    chown: f.get("chown").cloned(),
                    add,
                }
            }
            "ENV" => Kind::Env(pairs(line, rest)?),
            "LABEL" => Kind::Label(pairs(line, rest)?),
            "ARG" => {
                let ws = words(line, rest)?;
                let [w] = ws.as_slice() else {
                    return Err(err(line, "ARG takes one NAME[=default]"));
                };
                match w.split_once('=') {
                    Some((k, v)) => Kind::Arg(k.to_string(), Some(v.to_string())),
                    None => Kind::Arg(w.clone(), None),
                }
            }
            "WORKDIR" => Kind::Workdir(rest.to_string()),
            "USER" => Kind::User(rest.to_string()),
            "ENTRYPOINT" => Kind::Entrypoint(command(line, rest)?),
            "CMD" => Kind::Cmd(command(line, rest)?),
            "EXPOSE" => Kind::Expose(words(line, rest)?),
            "STOPSIGNAL" => Kind::StopSignal(rest.to_string()),
            "VOLUME" => Kind::Volume(match command(line, rest)? {
                Command::Exec(v) => v,
                Command::Shell(s) => words(line, &s)?,
            }),
            "SHELL" => match command(line, rest)? {
                Command::Exec(v) => Kind::Shell(v),
                Command::Shell(_) => return Err(err(line, "SHELL takes a JSON array")),
            },
            other => {
                return Err(err(
                    line,
                    format!("the instruction {other} is not supported by darwin-cri image build"),
                ));
            }
        };
        if rest.is_empty() && !matches!(kind, Kind::Expose(_)) {
            return Err(err(line, format!("{keyword} needs arguments")));
        }
        let instruction = Instruction {
            line,
            text: format!("{keyword} {rest}"),
            kind,
        };
        match file.stages.last_mut() {
            Some(stage) => stage.instructions.push(instruction),
            None => match instruction.kind {
                Kind::Arg(k, v) => file.global_args.push((k, v)),
                _ => return Err(err(line, "only ARG may come before the first FROM")),
            },
        }
    }
    if file.stages.is_empty() {
        return Err(Error("the Containerfile has no FROM".to_string()));
    }
    Ok(file)
}

/// Expands `$V`, `${V}`, `${V:-default}` and `${V:+alt}` from `vars`; `\$` is a literal `$`.
pub fn expand(s: &str, vars: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\\' && b.get(i + 1) == Some(&b'$') {
            out.push('$');
            i += 2;
            continue;
        }
        if c != b'$' {
            let ch = s[i..].chars().next().unwrap_or_default();
            out.push(ch);
            i += ch.len_utf8().max(1);
            continue;
        }
        if b.get(i + 1) == Some(&b'{')
            && let Some(end) = s[i + 2..].find('}')
        {
            {
                let inner = &s[i + 2..i + 2 + end];
                let value = if let Some((name, default)) = inner.split_once(":-") {
                    vars(name)
                        .filter(|v| !v.is_empty())
                        .unwrap_or_else(|| default.to_string())
                } else if let Some((name, alt)) = inner.split_once(":+") {
                    vars(name)
                        .filter(|v| !v.is_empty())
                        .map(|_| alt.to_string())
                        .unwrap_or_default()
                } else {
                    vars(inner).unwrap_or_default()
                };
                out.push_str(&value);
                i += end + 3;
                continue;
            }
        }
        let name_len = s[i + 1..]
            .bytes()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == b'_')
            .count();
        if name_len == 0 {
            out.push('$');
            i += 1;
            continue;
        }
        out.push_str(&vars(&s[i + 1..i + 1 + name_len]).unwrap_or_default());
        i += 1 + name_len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_forms_continuations_and_refusals() {
        let f = parse(
            "# syntax=docker/dockerfile:1\nARG BASE=busybox\nFROM $BASE AS build\n\
             RUN echo a && \\\n    # a comment\n    echo b\nRUN [\"sh\", \"-c\", \"true\"]\n\
             COPY --chown=1000:1000 a b /dst/\nENV A=1 B=\"two words\"\nENV C old form\n\
             FROM scratch\nCOPY --from=build /x /y\nCMD [\"/y\"]\n",
        )
        .expect("parses");
        assert_eq!(
            file_args(&f),
            vec![("BASE".to_string(), Some("busybox".to_string()))]
        );
        assert_eq!(f.stages.len(), 2);
        assert_eq!(f.stages[0].name.as_deref(), Some("build"));
        assert_eq!(
            f.stages[0].instructions[0].kind,
            Kind::Run(Command::Shell("echo a && echo b".into()))
        );
        assert_eq!(f.stages[0].instructions[0].line, 4);
        assert_eq!(
            f.stages[0].instructions[1].kind,
            Kind::Run(Command::Exec(vec!["sh".into(), "-c".into(), "true".into()]))
        );
        assert_eq!(
            f.stages[0].instructions[3].kind,
            Kind::Env(vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into())
            ])
        );
        assert_eq!(
            f.stages[0].instructions[4].kind,
            Kind::Env(vec![("C".into(), "old form".into())])
        );
        let Kind::Copy { from, .. } = &f.stages[1].instructions[0].kind else {
            panic!("copy")
        };
        assert_eq!(from.as_deref(), Some("build"));

        let e = parse("FROM x\nHEALTHCHECK CMD true\n").expect_err("refused");
        assert!(
            e.to_string().contains("line 2") && e.to_string().contains("HEALTHCHECK"),
            "{e}"
        );
        assert!(parse("RUN true\n").is_err());
        assert!(parse("FROM x\nADD https://example.com/a /a\n").is_err());
        assert!(parse("FROM x\nRUN --mount=type=cache,target=/c true\n").is_err());
        assert!(
            parse("FROM x\nRUN \"unclosed\n").is_ok(),
            "shell form is the shell's"
        );
        assert!(parse("FROM x\nENV A=\"unclosed\n").is_err());
    }

    fn file_args(f: &Containerfile) -> Vec<(String, Option<String>)> {
        f.global_args.clone()
    }

    #[test]
    fn expansion() {
        let vars = |n: &str| match n {
            "A" => Some("1".to_string()),
            "E" => Some(String::new()),
            _ => None,
        };
        assert_eq!(
            expand("$A-${A}-${B:-d}-${A:+x}-${E:-e}-\\$A-$", &vars),
            "1-1-d-x-e-$A-$"
        );
        assert_eq!(expand("/ünïcode/$A", &vars), "/ünïcode/1");
    }
}
