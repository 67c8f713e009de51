//! SQL over the stored history with DataFusion (issue 6). Depends on `samos-schemas` only.
