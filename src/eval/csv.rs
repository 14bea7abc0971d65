//! Landmark label files.
//!
//! A label file is CSV (comma-separated, UTF-8), one image per line:
//!
//! ```text
//! image,x0,y0,x1,y1,...          <- optional header (every coordinate column non-numeric)
//! frames/0001.png,120.5,88,,     <- landmark 1 not visible
//! frames/0002.png,118,90,-1,-1   <- negative = not visible too
//! ```
//!
//! - column 1: the image path, relative to the folder holding the CSV file (absolute paths
//!   are kept); fields may be double-quoted (`"a,b.png"`, `""` for a quote inside);
//! - then x, y of every landmark in pixels of that image (origin top-left; x to the right,
//!   y down; pixel centres at +0.5 as in the reference);
//! - a landmark whose x or y is empty or negative is not visible (the paper protocol's
//!   all-landmark metrics still use negative coordinates as they are, as the reference does);
//! - optionally a foreground mask per image in column 2, before the coordinates:
//!   `image,mask,x0,y0,...` (an even number of columns; path relative like the image's,
//!   empty = no mask). The image is multiplied by the mask (non-zero = foreground) after
//!   both are resized to the model input, as the reference's Human3.6M loader does;
//! - every line has the same number of columns, 1 (+ 1 with masks) + 2 x landmarks; blank
//!   lines and lines starting with `#` are skipped.
//!
//! Errors name the file, the line and the column.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// One labelled image.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelRow {
    /// Image path, resolved against the CSV file's folder.
    pub image: PathBuf,
    /// 1-based line number in the CSV file.
    pub line: usize,
    /// Landmarks in pixels; None = not visible.
    pub points: Vec<Option<[f64; 2]>>,
    /// The coordinates as written, negative ones included; None where a field is empty.
    pub raw: Vec<Option<[f64; 2]>>,
    /// Foreground mask image, resolved like `image`.
    pub mask: Option<PathBuf>,
}

/// A parsed label file.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelSet {
    pub path: PathBuf,
    /// Header fields when the file has a header line.
    pub header: Option<Vec<String>>,
    pub num_landmarks: usize,
    pub rows: Vec<LabelRow>,
}

impl LabelSet {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, path)
    }

    /// Parses `text` as the contents of the CSV file at `path` (used for messages and as
    /// the base of relative image paths).
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut header: Option<Vec<String>> = None;
        let mut columns: Option<usize> = None;
        let mut rows = Vec::new();
        let mut first = true;
        for (i, raw) in text.lines().enumerate() {
            let at = At { path, line: i + 1 };
            let raw = raw.trim_end_matches('\r');
            if raw.trim().is_empty() || raw.trim_start().starts_with('#') {
                continue;
            }
            let fields = split_fields(raw).map_err(|(c, m)| at.err(Some(c), m))?;
            let is_first = std::mem::replace(&mut first, false);
            let coords0 = check_columns(&fields, columns, &at)?;
            columns = Some(fields.len());
            // A header: the first line, every coordinate column a non-number.
            if is_first
                && fields[coords0..]
                    .iter()
                    .all(|f| !f.is_empty() && f.parse::<f64>().is_err())
            {
                header = Some(fields);
                continue;
            }
            rows.push(parse_row(&fields, coords0, base, &at)?);
        }
        if rows.is_empty() {
            return Err(Error::Invalid(format!(
                "{}: no labelled images (expected lines of: image path, then x,y per landmark)",
                path.display()
            )));
        }
        Ok(Self {
            path: path.to_path_buf(),
            header,
            num_landmarks: rows[0].points.len(),
            rows,
        })
    }

    /// Refuses a set where no row has a visible landmark (nothing to fit or score), before
    /// any detection; `role` says what the set is for ("training", "test").
    pub fn require_visible(&self, role: &str) -> Result<()> {
        if self
            .rows
            .iter()
            .any(|r| r.points.iter().any(Option::is_some))
        {
            return Ok(());
        }
        Err(Error::Invalid(format!(
            "{}: no visible landmark in its {} rows (every x or y is empty or negative), so \
             there is nothing to {}",
            self.path.display(),
            self.rows.len(),
            if role == "test" { "score" } else { "fit" }
        )))
    }

    /// Rows with a visible landmark outside their image of `sizes[i]` (width, height) pixels
    /// (those still count as visible): their 1-based lines in the CSV.
    pub fn lines_outside(&self, sizes: &[(usize, usize)]) -> Vec<usize> {
        self.rows
            .iter()
            .zip(sizes)
            .filter(|(r, &(w, h))| {
                r.points
                    .iter()
                    .flatten()
                    .any(|p| !(0.0..=w as f64).contains(&p[0]) || !(0.0..=h as f64).contains(&p[1]))
            })
            .map(|(r, _)| r.line)
            .collect()
    }
}

/// A line of a label file, for its errors.
struct At<'a> {
    path: &'a Path,
    line: usize,
}

impl At<'_> {
    /// `msg` at this line (and 1-based column `col`).
    fn err(&self, col: Option<usize>, msg: String) -> Error {
        let (path, line) = (self.path.display(), self.line);
        Error::Invalid(match col {
            Some(c) => format!("{path}:{line}: column {c}: {msg}"),
            None => format!("{path}:{line}: {msg}"),
        })
    }
}

/// Checks a line's column count (at least 3, as many as the lines before: `columns`) and
/// returns the index of its first coordinate column: 2 with a mask column (an even count),
/// else 1.
fn check_columns(fields: &[String], columns: Option<usize>, at: &At) -> Result<usize> {
    if fields.len() < 3 {
        return Err(at.err(
            None,
            format!(
                "{} columns; expected the image path (and a mask path) then x,y per \
                 landmark (at least 3)",
                fields.len()
            ),
        ));
    }
    // An even count: column 2 is the mask. A number there is a missing coordinate.
    let coords0 = if fields.len().is_multiple_of(2) { 2 } else { 1 };
    if coords0 == 2 && fields[1].parse::<f64>().is_ok() {
        return Err(at.err(
            None,
            format!(
                "{} columns: with an even count column 2 is the mask path, but it holds \
                 the number {:?} (a coordinate missing?)",
                fields.len(),
                fields[1]
            ),
        ));
    }
    if let Some(n) = columns.filter(|&n| n != fields.len()) {
        return Err(at.err(
            None,
            format!(
                "{} columns, but earlier lines have {n} (image{} + {} landmarks)",
                fields.len(),
                if n % 2 == 0 { " + mask" } else { "" },
                (n - 1) / 2
            ),
        ));
    }
    Ok(coords0)
}

/// A labelled image's line: its paths resolved against `base`, its landmarks from column
/// `coords0` on.
fn parse_row(fields: &[String], coords0: usize, base: &Path, at: &At) -> Result<LabelRow> {
    if fields[0].is_empty() {
        return Err(at.err(Some(1), "empty image path".into()));
    }
    let num = (fields.len() - coords0) / 2;
    let mut points = Vec::with_capacity(num);
    let mut raw = Vec::with_capacity(num);
    for j in 0..num {
        let (point, written) = parse_landmark(fields, coords0, j, at)?;
        points.push(point);
        raw.push(written);
    }
    let resolve = |f: &str| {
        let p = PathBuf::from(f);
        if p.is_absolute() {
            p
        } else {
            base.join(p)
        }
    };
    Ok(LabelRow {
        image: resolve(&fields[0]),
        line: at.line,
        points,
        raw,
        mask: (coords0 == 2 && !fields[1].is_empty()).then(|| resolve(&fields[1])),
    })
}

/// A landmark's coordinates, if any.
type Point = Option<[f64; 2]>;

/// Landmark `j`: its position (None when not visible: a field empty or negative) and its
/// coordinates as written (None when a field is empty).
fn parse_landmark(fields: &[String], coords0: usize, j: usize, at: &At) -> Result<(Point, Point)> {
    let mut xy = [0f64; 2];
    let mut visible = true;
    let mut given = true;
    for c in 0..2 {
        let col = coords0 + 1 + 2 * j + c;
        let f = &fields[col - 1];
        if f.is_empty() {
            visible = false;
            given = false;
            continue;
        }
        let v: f64 = f.parse().map_err(|_| {
            at.err(
                Some(col),
                format!(
                    "cannot read {f:?} as the {} of landmark {j} (a number in \
                     pixels; empty or negative = not visible)",
                    ["x", "y"][c]
                ),
            )
        })?;
        if !v.is_finite() {
            return Err(at.err(Some(col), format!("{f:?} is not a finite number")));
        }
        if v < 0.0 {
            visible = false;
        }
        xy[c] = v;
    }
    Ok((visible.then_some(xy), given.then_some(xy)))
}

/// Splits one CSV line into trimmed fields; double-quoted fields may hold commas and `""`.
/// Errors carry the 1-based column.
fn split_fields(line: &str) -> std::result::Result<Vec<String>, (usize, String)> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let col = fields.len() + 1;
        // Leading blanks.
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                if c == '"' {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        field.push('"');
                    } else {
                        closed = true;
                        break;
                    }
                } else {
                    field.push(c);
                }
            }
            if !closed {
                return Err((col, "unterminated quoted field".into()));
            }
            while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
                chars.next();
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(c) => {
                    return Err((col, format!("unexpected {c:?} after a quoted field")));
                }
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field.trim().to_string());
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some(c) => field.push(c),
                }
            }
            fields.push(field.trim().to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
        assert_eq!(split_fields("a, 1 ,2").unwrap(), vec!["a", "1", "2"]);
        assert_eq!(
            split_fields("\"x,\"\"y\"\".png\",1,,").unwrap(),
            vec!["x,\"y\".png", "1", "", ""]
        );
        assert_eq!(split_fields("\"a").unwrap_err().0, 1);
        assert_eq!(split_fields("a,\"b\"c").unwrap_err().0, 2);
    }

    #[test]
    fn sets_without_visible_landmarks_and_labels_outside_the_image() {
        // Issue 24 (12): `eval` scored 0.0 when no test landmark was visible, and counted
        // landmarks far outside the image as visible without a word.
        let path = Path::new("dir/test.csv");
        let none = LabelSet::parse("a.png,-1,-1\nb.png,,\n", path).unwrap();
        let e = none.require_visible("test").unwrap_err().to_string();
        assert!(
            e.contains("dir/test.csv") && e.contains("nothing to score"),
            "{e}"
        );
        let e = none.require_visible("training").unwrap_err().to_string();
        assert!(e.contains("nothing to fit"), "{e}");
        let set = LabelSet::parse("a.png,1,2\nb.png,5000,3\nc.png,3,-1\n", path).unwrap();
        set.require_visible("test").unwrap();
        assert_eq!(set.lines_outside(&[(10, 10); 3]), [2]);
        assert!(set.lines_outside(&[(6000, 10); 3]).is_empty());
    }
}
