//! An untrusted query string into the HTTP API's parameter grammar: times, counts and the
//! series window never panic or overflow, a window has from < to and at most 5000 buckets,
//! and a text parameter quoted for SQL parses back as one string literal holding exactly it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use samos_schemas::http_params::{MAX_POINTS, count, series_window, sql_text};
use sqlparser::ast::{Expr, SelectItem, SetExpr, Statement, Value};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

fuzz_target!(|data: &[u8]| {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(data).into_owned().collect();
    let get = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let _ = count(get("limit"), 200, 10_000);
    if let Ok(w) = series_window(get("from"), get("to"), get("points"), 1_800_000_000_000) {
        assert!(w.from < w.to && w.bucket >= 1);
        let buckets = (i128::from(w.to) - i128::from(w.from) + i128::from(w.bucket) - 1)
            / i128::from(w.bucket);
        assert!(buckets <= i128::from(MAX_POINTS), "{w:?}");
    }
    for (_, text) in &pairs {
        let sql = format!("SELECT {}", sql_text(text));
        let statements = Parser::parse_sql(&GenericDialect {}, &sql)
            .unwrap_or_else(|e| panic!("{sql:?} does not parse: {e}"));
        let [Statement::Query(q)] = statements.as_slice() else {
            panic!("{sql:?} is not one query");
        };
        let SetExpr::Select(select) = q.body.as_ref() else {
            panic!("{sql:?}");
        };
        let [SelectItem::UnnamedExpr(Expr::Value(v))] = select.projection.as_slice() else {
            panic!("{sql:?} is not one literal");
        };
        assert_eq!(v.value, Value::SingleQuotedString(text.clone()), "{sql:?}");
    }
});
