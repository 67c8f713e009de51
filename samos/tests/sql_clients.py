"""Real SQL clients against Samos's PostgreSQL wire and Flight SQL endpoints.

Each subcommand prints one JSON document on stdout: the rows a query returned (every value as
text, so the Rust side compares them with `samos sql --format csv`), or an error's class and
message with exit status 3 (a refusal the test expects to see).

    psycopg DSN SQL [PARAM]       psycopg 3 (libpq's extended protocol; PARAM binds %s)
    psycopg-stream DSN SQL        psycopg's single-row mode: rows counted, never held
    flight URI USER PASSWORD CA SQL      pyarrow.flight with Basic auth (CA: '' for plain gRPC)
    flight-stream URI SQL         pyarrow.flight, batches counted as they come, never held
    adbc URI USER PASSWORD CA SQL        the ADBC Flight SQL driver (DB-API)
"""

import json
import sys


def text(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return str(v)


def emit_rows(rows):
    print(json.dumps([[text(v) for v in row] for row in rows]))


def refused(e):
    print(json.dumps({"error": type(e).__name__, "message": str(e)}))
    sys.exit(3)


def psycopg_query(dsn, sql, param=None):
    import psycopg

    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            with conn.cursor() as cur:
                if param is None:
                    cur.execute(sql)
                else:
                    cur.execute(sql, (param,))
                emit_rows(cur.fetchall())
    except psycopg.Error as e:
        refused(e)


def psycopg_stream(dsn, sql):
    import psycopg

    n = 0
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            with conn.cursor() as cur:
                for _ in cur.stream(sql):
                    n += 1
    except psycopg.Error as e:
        print(json.dumps({"error": type(e).__name__, "message": str(e), "rows": n}))
        sys.exit(3)
    print(json.dumps({"rows": n}))


def flight_statement(client, options, sql):
    """The FlightInfo of a Flight SQL statement. pyarrow has no Flight SQL client, so the
    command is encoded by hand: an Any wrapping CommandStatementQuery (field 1: the text)."""
    from pyarrow.flight import FlightDescriptor

    query = sql.encode()
    command = b"\x0a" + varint(len(query)) + query
    type_url = b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery"
    any_msg = b"\x0a" + varint(len(type_url)) + type_url + b"\x12" + varint(len(command)) + command
    return client.get_flight_info(FlightDescriptor.for_command(any_msg), options)


def flight_client(uri, user, password, ca):
    import pyarrow.flight as fl

    kwargs = {"tls_root_certs": open(ca, "rb").read()} if ca else {}
    client = fl.FlightClient(uri, **kwargs)
    options = fl.FlightCallOptions()
    if user:
        header = client.authenticate_basic_token(user, password)
        options = fl.FlightCallOptions(headers=[header])
    return client, options


def flight_query(uri, user, password, ca, sql):
    import pyarrow

    try:
        client, options = flight_client(uri, user, password, ca)
        info = flight_statement(client, options, sql)
        tables = [client.do_get(e.ticket, options).read_all() for e in info.endpoints]
        emit_rows([list(r.values()) for t in tables for r in t.to_pylist()])
    except pyarrow.ArrowException as e:  # FlightError, or a stream that ended in an error
        refused(e)


def flight_stream(uri, sql):
    """Reads the batches one at a time, counting rows, holding none."""
    client, options = flight_client(uri, "", "", "")
    info = flight_statement(client, options, sql)
    n = 0
    for endpoint in info.endpoints:
        for chunk in client.do_get(endpoint.ticket, options):
            n += chunk.data.num_rows
    print(json.dumps({"rows": n}))


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def adbc_query(uri, user, password, ca, sql):
    import adbc_driver_flightsql.dbapi as flightsql
    from adbc_driver_flightsql import DatabaseOptions
    import adbc_driver_manager

    kwargs = {}
    if user:
        kwargs["username"] = user
        kwargs["password"] = password
    if ca:
        kwargs[DatabaseOptions.TLS_ROOT_CERTS.value] = open(ca).read()
    try:
        with flightsql.connect(uri, db_kwargs=kwargs, autocommit=True) as conn:
            with conn.cursor() as cur:
                cur.execute(sql)
                emit_rows(cur.fetchall())
    except adbc_driver_manager.Error as e:
        refused(e)


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "psycopg":
        psycopg_query(*args)
    elif cmd == "psycopg-stream":
        psycopg_stream(*args)
    elif cmd == "flight":
        flight_query(*args)
    elif cmd == "flight-stream":
        flight_stream(*args)
    elif cmd == "adbc":
        adbc_query(*args)
    else:
        sys.exit(f"unknown subcommand {cmd}")


if __name__ == "__main__":
    main()
