//! Every element of the plugin as `gst-inspect-1.0` shows it, against the README: each
//! element's section has a `#### \`NAME\` properties` table whose rows (name, type and
//! default, when it can change) are exactly the element's registered properties.

use gst::glib;
use gst::prelude::*;

mod common;
use common::*;

const ELEMENTS: [&str; 5] = [
    "stablekeypoints",
    "stablekeypointstrack",
    "stablekeypointspose",
    "stablekeypointsoverlay",
    "stablekeypointspublish",
];

/// Properties every GstObject / GstBaseTransform has; not ours to document.
const INHERITED: [&str; 3] = ["name", "parent", "qos"];

/// One row of a README properties table.
#[derive(Debug)]
struct Row {
    name: String,
    /// First word of the type column (`uint`, `string`, `enum`, ...).
    kind: String,
    /// What the parentheses say, backticks removed.
    default: Option<String>,
    /// `NULL, READY`, `any` or `-`.
    changeable: String,
}

fn readme_table(element: &str) -> Vec<Row> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let heading = format!("#### `{element}` properties");
    let start = readme
        .lines()
        .position(|l| l.trim() == heading)
        .unwrap_or_else(|| panic!("README has no heading {heading:?}"));
    readme
        .lines()
        .skip(start + 1)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // header and separator
        .flat_map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            let ty = cells[1];
            let default = ty
                .find('(')
                .map(|i| ty[i + 1..ty.rfind(')').unwrap()].replace('`', ""));
            let kind: String = ty
                .split_whitespace()
                .next()
                .unwrap()
                .trim_end_matches(',')
                .into();
            let changeable = cells[2].to_string();
            // A row may name several properties of the same type (`a`, `b`).
            cells[0]
                .split(',')
                .map(|n| Row {
                    name: n.trim().trim_matches('`').to_string(),
                    kind: kind.clone(),
                    default: default.clone(),
                    changeable: changeable.clone(),
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn kind_of(p: &glib::ParamSpec) -> &'static str {
    let t = p.value_type();
    if t == glib::Type::STRING {
        "string"
    } else if t == glib::Type::I32 {
        "int"
    } else if t == glib::Type::U32 {
        "uint"
    } else if t == glib::Type::U64 {
        "uint64"
    } else if t == glib::Type::BOOL {
        "bool"
    } else if t == glib::Type::F64 {
        "double"
    } else if t == gst::Structure::static_type() {
        "structure"
    } else if t.is_a(glib::Type::ENUM) {
        "enum"
    } else {
        "other"
    }
}

/// The default as the README writes it.
fn default_of(p: &glib::ParamSpec) -> Option<String> {
    let v = p.default_value();
    match kind_of(p) {
        "string" => Some(
            v.get::<Option<String>>()
                .unwrap()
                .unwrap_or_else(|| "none".into()),
        ),
        "int" => Some(v.get::<i32>().unwrap().to_string()),
        "uint" => Some(v.get::<u32>().unwrap().to_string()),
        "uint64" => Some(v.get::<u64>().unwrap().to_string()),
        "bool" => Some(v.get::<bool>().unwrap().to_string()),
        "double" => Some(format!("{:?}", v.get::<f64>().unwrap())),
        "enum" => Some(
            glib::EnumValue::from_value(v)
                .map(|(_, e)| e.nick().to_string())
                .unwrap(),
        ),
        _ => None,
    }
}

#[test]
fn readme_tables_list_exactly_the_registered_properties() {
    init();
    for element in ELEMENTS {
        let el = gst::ElementFactory::make(element).build().unwrap();
        let specs: Vec<glib::ParamSpec> = el
            .list_properties()
            .into_iter()
            .filter(|p| !INHERITED.contains(&p.name()))
            .collect();
        let rows = readme_table(element);
        let mut documented: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        let mut registered: Vec<&str> = specs.iter().map(|p| p.name()).collect();
        documented.sort();
        registered.sort();
        assert_eq!(
            documented, registered,
            "{element}: README vs gst-inspect-1.0"
        );
        for r in &rows {
            let p = specs.iter().find(|p| p.name() == r.name).unwrap();
            let what = format!("{element} `{}`", r.name);
            assert_eq!(r.kind, kind_of(p), "{what}: type");
            let flags = p.flags();
            let changeable = if !flags.contains(glib::ParamFlags::WRITABLE) {
                "-"
            } else if flags.contains(gst::PARAM_FLAG_MUTABLE_READY) {
                "NULL, READY"
            } else {
                "any"
            };
            assert_eq!(r.changeable, changeable, "{what}: when it can change");
            // Defaults written as placeholders (`<model>/...`) or explained (`none: ...`)
            // describe a default computed at run time.
            match (&r.default, default_of(p)) {
                (Some(doc), Some(real)) if doc.contains('<') || doc.starts_with("none:") => {
                    assert_eq!(real, "none", "{what}: {doc}")
                }
                (Some(doc), Some(real)) => assert_eq!(doc, &real, "{what}: default"),
                (doc, real) => assert!(doc.is_none() || real.is_none(), "{what}"),
            }
        }
    }
}

#[test]
fn gst_inspect_lists_every_element_of_the_plugin() {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let name = "libgststablekeypoints.so";
    let so = [deps.join(name), deps.parent().unwrap().join(name)]
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found next to {}", exe.display()));
    let dir = scratch().join("inspect-plugin-path");
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join(name);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&so, &link).unwrap();
    let inspect = |arg: &str| {
        let out = std::process::Command::new("gst-inspect-1.0")
            .arg(arg)
            .env("GST_PLUGIN_PATH", &dir)
            .env("GST_REGISTRY", scratch().join("registry.bin"))
            .output()
            .expect("run gst-inspect-1.0 (gstreamer1.0-tools)");
        assert!(out.status.success(), "gst-inspect-1.0 {arg} failed");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let plugin = inspect(&so.display().to_string());
    for element in ELEMENTS {
        assert!(
            plugin.contains(element),
            "{element} not in the plugin:\n{plugin}"
        );
        let text = inspect(element);
        for r in readme_table(element) {
            assert!(
                text.lines().any(|l| l.trim_start().starts_with(&format!("{} ", r.name))
                    && l.contains(':')),
                "{element}: gst-inspect-1.0 does not list `{}`:\n{text}",
                r.name
            );
        }
    }
}
