#!/usr/bin/python3
"""Writes the seed corpora of the fuzz targets, reproducibly, from the project's test data.

Usage: fuzz/make_seeds.py   (no arguments; rewrites every fuzz/corpus/*/seed-* file)

fuzz/corpus/control_codec/  one input per control transcript, in control_codec_fuzz.cc's format:
    seed-capture-*   the real iperf3 3.12 captures of tests/proto/testdata/*.hex, one operation
                     per recorded read, then the end of stream from both sides;
    seed-params-*    cookie, PARAM_EXCHANGE, one params JSON of test_params_test.cc as the body,
                     CREATE_STREAMS, end of stream;
    seed-case-*      short transcripts of the edge cases control_codec_test.cc covers.
fuzz/corpus/test_params/    seed-<sha1>: every params JSON of test_params_test.cc (string
    literals, and the ones its loops build) and of the captures.
fuzz/corpus/server_report/  seed-<sha1>: the server's results JSON of every capture made with
    --get-server-output, as recorded and with the recording relay's ports renumbered to the
    fuzz target's 40001.. (so that its connection views match).

Files other than seed-* (crash-*, timeout-*, oom-*, leak-*: inputs that once broke a target) are
never touched.
"""
import hashlib
import json
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
TESTDATA = ROOT / "tests" / "proto" / "testdata"
PARAMS_TEST = ROOT / "tests" / "proto" / "test_params_test.cc"
CORPUS = ROOT / "fuzz" / "corpus"

COOKIE = b"ymz3xjdmdsi2cnqgnh6gwl7t4ab5vbvkqc2e\0"

# State bytes (src/proto/wire.h), as they are on the wire.
TEST_START, TEST_RUNNING, TEST_END = 0x01, 0x02, 0x04
PARAM_EXCHANGE, CREATE_STREAMS, SERVER_TERMINATE, CLIENT_TERMINATE = 0x09, 0x0A, 0x0B, 0x0C
EXCHANGE_RESULTS, DISPLAY_RESULTS, IPERF_DONE = 0x0D, 0x0E, 0x10
ACCESS_DENIED, SERVER_ERROR = 0xFF, 0xFE

CLIENT, SERVER = 0, 1


# ---- The control_codec_fuzz.cc input format ---------------------------------------------------

def feed(side, data):
    """Operations that make `side` send `data`: short ones up to 63 bytes, long ones up to 8191."""
    out = bytearray()
    if not data:
        return bytes([side << 6])
    for start in range(0, len(data), 8191):
        piece = data[start:start + 8191]
        if len(piece) <= 63:
            out.append((side << 6) | len(piece))
        else:
            out.append(0x80 | (side << 5) | (len(piece) >> 8))
            out.append(len(piece) & 0xFF)
        out += piece
    return bytes(out)


def finish(side):
    return bytes([0xC0 | side])


def transcript(*steps):
    """steps: (side, bytes) to send, or side alone for its end of stream."""
    out = bytearray()
    for step in steps:
        out += finish(step) if isinstance(step, int) else feed(*step)
    return bytes(out)


def json_message(body):
    return len(body).to_bytes(4, "big") + body


def be32(value):
    return (value & 0xFFFFFFFF).to_bytes(4, "big")


# ---- Sources ----------------------------------------------------------------------------------

def captures():
    """(name, [(side, bytes)]) for each frozen capture."""
    for path in sorted(TESTDATA.glob("*.hex")):
        reads = []
        for line in path.read_text().split("\n"):
            if line.strip():
                tag, hex_bytes = line.split()
                reads.append((CLIENT if tag == "C" else SERVER, bytes.fromhex(hex_bytes)))
        yield path.stem, reads


def server_results(reads):
    """The server's results JSON of a capture: the message after its EXCHANGE_RESULTS."""
    stream = b"".join(data for side, data in reads if side == SERVER)
    start = stream.index(bytes([EXCHANGE_RESULTS])) + 1
    length = int.from_bytes(stream[start:start + 4], "big")
    return stream[start + 4:start + 4 + length]


def renumber_relay_ports(results):
    """The report's client-side ports, renumbered 40001.. in order of appearance."""
    text = results.decode()
    ports = []
    for match in re.finditer(r'(?:from |connected to |"host":|"remote_host":)"?[0-9.]+"?'
                             r'(?:, port |,"port":| port |,"remote_port":)([0-9]+)', text):
        if match.group(1) not in ports:
            ports.append(match.group(1))
    for index, port in enumerate(ports):
        text = re.sub(r"(?<![0-9])%s(?![0-9])" % port, str(40001 + index), text)
    return text.encode()


def server_report_seeds():
    for _, reads in captures():
        if b"get_server_output" not in b"".join(data for side, data in reads if side == CLIENT):
            continue
        results = server_results(reads)
        for seed in (results, renumber_relay_ports(results)):
            yield seed


def cpp_string_groups(source):
    """Adjacent C++ string literals of `source`, concatenated, in order of appearance."""
    token = re.compile(r'//[^\n]*|/\*.*?\*/|R"([^(\s]*)\((.*?)\)\1"|"((?:[^"\\\n]|\\.)*)"|'
                       r"'(?:[^'\\\n]|\\.)*'|\s+|.", re.S)
    escapes = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", '"': '"', "\\": "\\", "'": "'"}
    groups, current = [], None
    for match in token.finditer(source):
        text = match.group(0)
        if match.group(2) is not None:
            literal = match.group(2)
        elif match.group(3) is not None:
            literal = re.sub(r"\\(.)", lambda m: escapes.get(m.group(1), m.group(1)),
                             match.group(3))
        elif text.isspace() or text.startswith("//") or text.startswith("/*"):
            continue
        else:
            if current is not None:
                groups.append(current)
            current = None
            continue
        current = literal if current is None else current + literal
    if current is not None:
        groups.append(current)
    return groups


def params_from_test_file():
    """The JSON texts of test_params_test.cc, its loop-built ones included."""
    texts = []
    for group in cpp_string_groups(PARAMS_TEST.read_text()):
        try:
            json.loads(group)
            is_json = True
        except ValueError:
            is_json = False
        if group.lstrip().startswith("{") or (is_json and group.strip()):
            texts.append(group)
    # The tests that build their JSON in loops (NonBooleanFlagValueIsAmbiguous, ParallelRange,
    # ParallelThatIsNotANumberIsAmbiguous, RoleByteCountsByPresence, DeeplyNestedUnknownValue).
    for key in ("tcp", "udp", "sctp", "reverse", "bidirectional"):
        for value in ("1", "0", '"true"', "null", "[]", "{}", "1.5"):
            texts.append('{"%s":%s}' % (key, value))
    for value in ("0", "-1", "129", "1000000", "2147483648", "18446744073709551615",
                  "-9223372036854775809", "1e300", "-1e300", "0.5", "-0.5", "129.0", '"4"',
                  "true", "false", "null", "[4]", "{}"):
        texts.append('{"parallel":%s}' % value)
    for value in ("true", "false", "0", "1", "null", '"v1"', "{}"):
        texts.append('{"tcp":true,"role_byte":%s}' % value)
    # Numbers as iperf3 reads them (TimeAndOmitAreReadAsTheServerReadsThem, ...).
    for value in ("2147483648", "-2147483649", "4294967297", "-4294967295", "1e10",
                  "9007199254740993", "9007199254740995", "9223372036854775807", "1e400",
                  "-1e400", "1e-400", "-1.9", "4294967296.7", "0.99999999999999999", "-0"):
        texts.append('{"time":%s,"omit":%s}' % (value, value))
        texts.append('{"parallel":%s}' % value)
    for key in ("time", "omit"):
        for value in ('"5"', "true", "false", "null", "[4]", "{}"):
            texts.append('{"%s":%s}' % (key, value))
    texts.append('{"time":3,"x":0.' + "0" * 61 + "1}")
    # 20000 levels in the test; 2000 keep the seed small and still deep.
    texts.append('{"parallel":2,"x":' + "[" * 2000 + "]" * 2000 + "}")
    texts.append("")
    return texts


def params_from_captures():
    """The params JSON of each capture: the client's message after PARAM_EXCHANGE."""
    for _, reads in captures():
        client = b"".join(data for side, data in reads if side == CLIENT)
        length = int.from_bytes(client[37:41], "big")
        yield client[41:41 + length].decode()


def edge_cases():
    """Short transcripts of the situations control_codec_test.cc covers."""
    params = (b'{"tcp":true,"omit":0,"time":10,"num":0,"blockcount":0,"parallel":1,'
              b'"len":131072,"pacing_timer":1000,"client_version":"3.12"}')
    results = b'{"cpu_util_total":1.5,"streams":[{"id":1,"bytes":1024}]}'
    setup = [(CLIENT, COOKIE), (SERVER, bytes([PARAM_EXCHANGE])), (CLIENT, json_message(params)),
             (SERVER, bytes([CREATE_STREAMS]))]
    running = setup + [(SERVER, bytes([TEST_START, TEST_RUNNING]))]
    to_results = running + [(CLIENT, bytes([TEST_END])), (SERVER, bytes([EXCHANGE_RESULTS]))]
    return {
        "access-denied": [(CLIENT, COOKIE), (SERVER, bytes([ACCESS_DENIED])), SERVER, CLIENT],
        "server-error-full": setup[:3] + [(SERVER, bytes([SERVER_ERROR]) + be32(114) + be32(0)),
                                          SERVER, CLIENT],
        "server-error-signed": [(CLIENT, COOKIE),
                                (SERVER, bytes([SERVER_ERROR]) + be32(0x80000000) +
                                 be32(0xFFFFFFFF)), SERVER, CLIENT],
        "server-error-one-int": setup[:3] + [(SERVER, bytes([SERVER_ERROR]) + be32(155)), SERVER,
                                             CLIENT],
        "server-error-for-results": to_results + [(CLIENT, json_message(results)),
                                                  (SERVER, bytes([SERVER_ERROR]) + be32(206) +
                                                   be32(9)), SERVER, CLIENT],
        "server-terminate-for-results": to_results + [(CLIENT, json_message(results)),
                                                      (SERVER, bytes([SERVER_TERMINATE])), SERVER,
                                                      CLIENT],
        "client-done-for-params": setup[:2] + [(CLIENT, bytes([IPERF_DONE])), CLIENT, SERVER],
        "client-terminate-for-results": to_results + [(CLIENT, bytes([CLIENT_TERMINATE])), CLIENT,
                                                      SERVER],
        "server-terminate-mid-test": setup + [(SERVER, bytes([TEST_START, TEST_RUNNING,
                                                              SERVER_TERMINATE])), SERVER, CLIENT],
        "spurious-after-done": to_results + [
            (CLIENT, json_message(results)),
            (SERVER, json_message(results) + bytes([DISPLAY_RESULTS])),
            (CLIENT, bytes([IPERF_DONE])), CLIENT,
            (SERVER, bytes([SERVER_ERROR]) + be32(0) + be32(0)), SERVER],
        "close-where-json-due": setup[:2] + [CLIENT, SERVER],
        "garbage-cookie": [(CLIENT, b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")],
        "tls-hello": [(CLIENT, bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]))],
        "cookie-cut-short": [(CLIENT, COOKIE[:20]), CLIENT],
        "second-cookie": [(CLIENT, COOKIE + COOKIE)],
        "json-length-zero": setup[:2] + [(CLIENT, bytes([0, 0, 0, 0]) + b"{}")],
        "params-too-large": setup[:2] + [(CLIENT, be32(64 * 1024 + 1))],
        "params-at-cap": setup[:2] + [(CLIENT, be32(64 * 1024) + b"{}"), CLIENT],
        "results-announced-large": to_results + [(CLIENT, be32(64 * 1024 * 1024 - 1) + b"{}"),
                                                 CLIENT, SERVER],
        "results-too-large": to_results + [(CLIENT, be32(0xFFFFFFFF))],
        "results-top-byte-is-a-state": to_results + [(CLIENT, bytes([TEST_START, 0, 0, 2]) +
                                                      b"{}"), CLIENT, SERVER],
        "unknown-state": [(CLIENT, COOKIE), (SERVER, bytes([0x05]))],
        "rejected-params": setup[:2] + [(CLIENT, json_message(b'{"reverse":1}')),
                                        (SERVER, bytes([SERVER_ERROR]) + be32(114) + be32(0)),
                                        SERVER, CLIENT],
        "role-byte-params": setup[:2] + [(CLIENT, json_message(b'{"udp":true,"parallel":8,'
                                                               b'"role_byte":1}')), CLIENT,
                                         SERVER],
        "server-first": [(SERVER, bytes([ACCESS_DENIED])), (CLIENT, COOKIE), SERVER, CLIENT],
        # The protocol's order (control_order_test.cc): legal crossings and aborts...
        "client-done-crosses-running": setup + [(CLIENT, bytes([IPERF_DONE])),
                                                (SERVER, bytes([TEST_START, TEST_RUNNING])),
                                                CLIENT, SERVER],
        "terminate-then-done": running + [(CLIENT, bytes([CLIENT_TERMINATE, IPERF_DONE])), CLIENT,
                                          SERVER],
        "server-error-twice": running + [(SERVER, bytes([SERVER_ERROR]) + be32(206) + be32(9) +
                                          bytes([SERVER_ERROR]) + be32(206) + be32(9)),
                                         (CLIENT, bytes([IPERF_DONE])), SERVER, CLIENT],
        "server-error-while-params-due": setup[:2] + [(SERVER, bytes([SERVER_ERROR]) + be32(114) +
                                                       be32(110)), (CLIENT, json_message(params)),
                                                      SERVER, CLIENT],
        "access-denied-then-done": [(CLIENT, COOKIE), (SERVER, bytes([ACCESS_DENIED])),
                                    (CLIENT, bytes([IPERF_DONE])), SERVER, CLIENT],
        # ... and what breaks it, each at its first byte.
        "test-end-twice": running + [(CLIENT, bytes([TEST_END, TEST_END]))],
        "test-end-flood": running + [(CLIENT, bytes([TEST_END]) * 200)],
        "test-end-before-running": setup + [(CLIENT, bytes([TEST_END]))],
        "client-test-start": running + [(CLIENT, bytes([TEST_START]))],
        "second-params": setup + [(CLIENT, json_message(params))],
        "results-before-exchange": running + [(CLIENT, json_message(results))],
        "done-flood-after-the-end": to_results + [
            (CLIENT, json_message(results)),
            (SERVER, json_message(results) + bytes([DISPLAY_RESULTS])),
            (CLIENT, bytes([IPERF_DONE]) * 64)],
        "server-results-before-client": to_results + [(SERVER, json_message(results))],
        "server-iperf-done": setup + [(SERVER, bytes([IPERF_DONE]))],
        "access-denied-late": setup[:2] + [(SERVER, bytes([ACCESS_DENIED]))],
        "after-access-denied": [(CLIENT, COOKIE), (SERVER, bytes([ACCESS_DENIED, PARAM_EXCHANGE]))],
        "server-error-thrice": running + [(SERVER, (bytes([SERVER_ERROR]) + be32(1) + be32(0)) * 3)],
        "create-streams-before-params": setup[:2] + [(SERVER, bytes([CREATE_STREAMS]))],
        "exchange-before-test-end": running + [(SERVER, bytes([EXCHANGE_RESULTS]))],
    }


# ---- Writing ----------------------------------------------------------------------------------

def write_corpus(directory, seeds):
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("seed-*"):
        old.unlink()
    for name, data in sorted(seeds.items()):
        (directory / ("seed-" + name)).write_bytes(data)
    print("%s: %d seeds, %d bytes" % (directory.relative_to(ROOT), len(seeds),
                                      sum(len(d) for d in seeds.values())))


def sha1_name(data):
    return hashlib.sha1(data).hexdigest()[:16]


def main():
    codec = {}
    for name, reads in captures():
        codec["capture-" + name] = transcript(*reads, CLIENT, SERVER)
    all_params = params_from_test_file() + list(params_from_captures())
    for text in all_params:
        body = text.encode()
        if body.startswith(b"{"):
            codec["params-" + sha1_name(body)] = transcript(
                (CLIENT, COOKIE), (SERVER, bytes([PARAM_EXCHANGE])), (CLIENT, json_message(body)),
                (SERVER, bytes([CREATE_STREAMS])), CLIENT, SERVER)
    for name, steps in edge_cases().items():
        codec["case-" + name] = transcript(*steps)
    write_corpus(CORPUS / "control_codec", codec)

    params = {sha1_name(text.encode()): text.encode() for text in all_params}
    write_corpus(CORPUS / "test_params", params)

    reports = {sha1_name(seed): seed for seed in server_report_seeds()}
    write_corpus(CORPUS / "server_report", reports)


if __name__ == "__main__":
    main()
