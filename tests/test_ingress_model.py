"""The model side of Ingress: IngressClass and TLS Secret manifests, which Ingresses are served,
the servers merged as ingress-nginx merges them, and the controller's input (podnet/ingress.py).

Certificates are made here with cryptography, small and fresh for each test that needs one."""

from __future__ import annotations

import base64
import datetime
import json
import textwrap

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from modelkit import errors_of, hosts, make_plan, service

from podnet import ingress, report, tls
from podnet.plan import Plan

UTC = datetime.UTC


def make_pair(names: list[str], days: int = 30, start_days: int = -1) -> tuple[str, str]:
    """(certificate PEM, key PEM): self-signed, EC P-256, for ``names`` (subjectAltName)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "x")])
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now + datetime.timedelta(days=start_days))
               .not_valid_after(now + datetime.timedelta(days=days)))
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


def secret(name: str, cert: str, key: str, ns: str = "default", plain: bool = False,
           kind: str = "kubernetes.io/tls") -> str:
    if plain:
        body = ("stringData:\n  tls.crt: |\n" + textwrap.indent(cert, "    ")
                + "  tls.key: |\n" + textwrap.indent(key, "    "))
    else:
        b64 = {k: base64.b64encode(v.encode()).decode() for k, v in (("crt", cert), ("key", key))}
        body = f"data:\n  tls.crt: {b64['crt']}\n  tls.key: {b64['key']}\n"
    return (f"---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}}}\n"
            f"type: {kind}\n{body}")


def ingress_class(name: str, controller: str, default: bool = False) -> str:
    annotations = ("  annotations: {ingressclass.kubernetes.io/is-default-class: \"true\"}\n"
                   if default else "")
    return (f"---\napiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n"
            f"  name: {name}\n{annotations}spec: {{controller: {controller}}}\n")


def ing(name: str, spec: str, ns: str = "default") -> str:
    return (f"---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, "
            f"namespace: {ns}}}\nspec:\n{textwrap.indent(textwrap.dedent(spec), '  ')}")


def path(p: str, kind: str, svc: str, port: int | str) -> str:
    ref = f"number: {port}" if isinstance(port, int) else f"name: {port}"
    backend = f"{{service: {{name: {svc}, port: {{{ref}}}}}}}"
    return f"{{path: {p}, pathType: {kind}, backend: {backend}}}"


def served(plan: Plan) -> dict[str, list[tuple[str, str, str | None, str | None]]]:
    return {s.host: [(loc.path, loc.path_type, loc.service, loc.ingress) for loc in s.locations]
            for s in plan.ingress_servers}


# -- certificates ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "host", "covered"), [
    ("web.example.test", "web.example.test", True),
    ("WEB.example.test", "web.example.test", True),
    ("*.apps.example.test", "x.apps.example.test", True),
    ("*.apps.example.test", "a.b.apps.example.test", False),  # one label only (RFC 6125)
    ("*.apps.example.test", "apps.example.test", False),
    ("*.apps.example.test", "*.apps.example.test", True),  # a wildcard host: the same name
    ("x.apps.example.test", "*.apps.example.test", False),
    ("*.example.test", "*.apps.example.test", False),
])
def test_certificate_names_cover_hosts_as_rfc_6125_says(name: str, host: str,
                                                        covered: bool) -> None:
    assert tls.name_covers(name, host) is covered


def test_a_matching_pair_is_read_with_its_names_and_dates() -> None:
    cert, key = make_pair(["a.example.test", "*.b.example.test"])
    info = tls.check_pair(cert.encode(), key.encode())
    assert info.names == ("a.example.test", "*.b.example.test")
    assert info.covers("x.b.example.test") and not info.covers("b.example.test")
    assert not info.expired()


def test_a_key_of_another_certificate_is_refused_naming_tls_key() -> None:
    cert, _ = make_pair(["a.example.test"])
    _, other = make_pair(["a.example.test"])
    with pytest.raises(tls.TLSError) as got:
        tls.check_pair(cert.encode(), other.encode())
    assert got.value.key == "tls.key" and "is not the private key of the certificate" in str(
        got.value)


def test_an_encrypted_key_is_refused_with_how_to_decrypt_it() -> None:
    cert, key = make_pair(["a.example.test"])
    loaded = serialization.load_pem_private_key(key.encode(), password=None)
    locked = loaded.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(b"pw"))
    with pytest.raises(tls.TLSError) as got:
        tls.check_pair(cert.encode(), locked)
    assert got.value.key == "tls.key" and "openssl pkey" in got.value.fix


# -- Secret manifests ------------------------------------------------------------------------------
@pytest.mark.parametrize("plain", [False, True], ids=["data", "stringData"])
def test_a_tls_secret_is_read_from_data_or_string_data(plain: bool) -> None:
    cert, key = make_pair(["a.example.test"])
    plan = make_plan(service("web") + secret("a-tls", cert, key, plain=plain) + ing("i", f"""\
        tls: [{{hosts: [a.example.test], secretName: a-tls}}]
        rules:
          - host: a.example.test
            http: {{paths: [{path("/", "Prefix", "web", 80)}]}}
        """))
    assert [(t.ref, t.hosts, t.names) for t in plan.tls_secrets] == [
        ("default/a-tls", ["a.example.test"], ["a.example.test"])]
    assert plan.tls_secrets[0].cert == cert and plan.tls_secrets[0].key == key
    assert not plan.warnings


def test_secret_errors_name_the_field_and_the_fix() -> None:
    cert, key = make_pair(["a.example.test"])
    _, other = make_pair(["a.example.test"])
    found = "\n".join(errors_of(
        secret("mismatch", cert, other)
        + "---\napiVersion: v1\nkind: Secret\nmetadata: {name: nokey}\ntype: kubernetes.io/tls\n"
          "data: {tls.crt: '" + base64.b64encode(cert.encode()).decode() + "'}\n"
        + "---\napiVersion: v1\nkind: Secret\nmetadata: {name: notb64}\n"
          "type: kubernetes.io/tls\ndata: {tls.crt: '@@@', tls.key: '@@@'}\n"
        + secret("garbage", "hello\n", key, plain=True)))
    assert ("Secret default/mismatch: data.tls.key: is not the private key of the certificate "
            "in tls.crt") in found
    assert ("Secret default/nokey: data.tls.key: is missing: a kubernetes.io/tls Secret needs "
            "tls.crt and tls.key") in found
    assert "Secret default/notb64: data.tls.crt: is not base64" in found
    assert "Secret default/garbage: stringData.tls.crt: holds no PEM certificate" in found


def test_other_secret_types_are_ignored_with_one_warning() -> None:
    plan = make_plan("---\napiVersion: v1\nkind: Secret\nmetadata: {name: creds}\n"
                     "stringData: {username: u, password: p}\n")
    assert plan.tls_secrets == []
    assert [str(w).split(": ", 1)[1] for w in plan.warnings] == [
        "Secret default/creds: type: a Secret of type Opaque is not used by podnet (it reads "
        "kubernetes.io/tls Secrets, for Ingress TLS); it is ignored; fix: remove it, or make it "
        "type kubernetes.io/tls with tls.crt and tls.key"]


def test_uncovered_hosts_expired_certificates_and_missing_secrets_are_warnings() -> None:
    cert, key = make_pair(["a.example.test"], days=-1, start_days=-10)
    plan = make_plan(service("web") + secret("a-tls", cert, key) + ing("i", f"""\
        tls:
          - {{hosts: [a.example.test, b.example.test], secretName: a-tls}}
          - {{hosts: [c.example.test], secretName: absent}}
        rules:
          - {{host: a.example.test, http: {{paths: [{path("/", "Prefix", "web", 80)}]}}}}
          - {{host: b.example.test, http: {{paths: [{path("/", "Prefix", "web", 80)}]}}}}
          - {{host: c.example.test, http: {{paths: [{path("/", "Prefix", "web", 80)}]}}}}
        """))
    text = "\n".join(str(w) for w in plan.warnings)
    assert "Secret default/a-tls: data.tls.crt: the certificate expired on" in text
    assert ("Ingress default/i: spec.tls[0].hosts[1]: the certificate of Secret default/a-tls "
            "does not cover 'b.example.test' (its names: a.example.test)") in text
    assert ("spec.tls[1].secretName: Secret 'absent' does not exist in namespace default: its "
            "hosts are served without TLS") in text
    certs = {s.host: s.certificate for s in plan.ingress_servers}
    assert certs == {"a.example.test": "default/a-tls", "b.example.test": "default/a-tls",
                     "c.example.test": None, "_": None}


# -- classes ---------------------------------------------------------------------------------------
def test_ingresses_of_another_controller_are_ignored_and_plan_says_why() -> None:
    other = ingress_class("other", "example.com/other")
    plan = make_plan(service("web") + other + ing("mine", f"""\
        rules: [{{host: a.example.test, http: {{paths: [{path("/", "Prefix", "web", 80)}]}}}}]
        """) + ing("theirs", f"""\
        ingressClassName: other
        rules: [{{host: b.example.test, http: {{paths: [{path("/", "Prefix", "nowhere", 80)}]}}}}]
        """))
    assert [(c.name, c.controller, c.default) for c in plan.ingress_classes] == [
        ("other", "example.com/other", False), ("nginx", "k8s.io/ingress-nginx", True)]
    assert [(i.ingress, i.class_name, i.reason) for i in plan.ignored_ingresses] == [
        ("default/theirs", "other", "class other's controller is example.com/other, not "
         "k8s.io/ingress-nginx")]
    assert set(served(plan)) == {"a.example.test", "_"}  # no class given: the default, nginx
    text = report.render(plan)
    assert "Ignored Ingresses (1)" in text
    assert "default/theirs  other  class other's controller is example.com/other" in text


def test_an_unknown_class_and_two_default_classes_are_errors() -> None:
    found = "\n".join(errors_of(service("web") + ingress_class("mine", "k8s.io/ingress-nginx",
                                                                default=True) + ing("i", f"""\
        ingressClassName: traefik
        rules: [{{http: {{paths: [{path("/", "Prefix", "web", 80)}]}}}}]
        """)))
    assert "Ingress default/i: spec.ingressClassName: 'traefik' is not an IngressClass" in found
    assert "IngressClass mine (m.yaml:" in found and "is the default class too" in found
    assert 'mark one IngressClass as the default ("true"), not both mine and nginx' in found


# -- servers ---------------------------------------------------------------------------------------
DEMO_SERVICES = "".join(service(n, "demo") for n in ("web", "api", "echo", "whoami")) + (
    "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n")
DEMO_INGRESSES = ing("demo", f"""\
    ingressClassName: nginx
    defaultBackend: {{service: {{name: web, port: {{name: http}}}}}}
    rules:
      - host: web.example.test
        http:
          paths:
            - {path("/", "Prefix", "web", 80)}
            - {path("/healthz", "Exact", "echo", "http")}
      - host: api.example.test
        http: {{paths: [{path("/v1", "Prefix", "api", 80)}]}}
    """, "demo") + ing("paths", f"""\
    rules:
      - host: paths.example.test
        http:
          paths:
            - {path("/aaa", "Prefix", "api", 80)}
            - {path("/aaa/bbb", "Prefix", "whoami", "http")}
            - {path("/aaa/bbb/ccc", "Exact", "echo", "http")}
            - {path("/foo", "ImplementationSpecific", "web", 80)}
    """, "demo") + ing("wild", f"""\
    ingressClassName: nginx
    rules:
      - host: "*.apps.example.test"
        http: {{paths: [{path("/", "Prefix", "whoami", "http")}]}}
    """, "demo") + ing("merge", f"""\
    ingressClassName: nginx
    rules:
      - host: web.example.test
        http:
          paths:
            - {path("/whoami", "Prefix", "whoami", "http")}
            - {path("/", "Prefix", "api", 80)}
    """, "demo")


def test_servers_merge_ingresses_as_ingress_nginx_does() -> None:
    plan = make_plan(DEMO_SERVICES + DEMO_INGRESSES)
    assert served(plan) == {
        "api.example.test": [("/v1", "Prefix", "demo/api", "demo/demo"),
                             ("/", "Prefix", "demo/web", "demo/demo")],  # its defaultBackend
        "paths.example.test": [("/aaa/bbb/ccc", "Exact", "demo/echo", "demo/paths"),
                               ("/aaa/bbb", "Prefix", "demo/whoami", "demo/paths"),
                               ("/aaa", "Prefix", "demo/api", "demo/paths"),
                               ("/foo", "ImplementationSpecific", "demo/web", "demo/paths"),
                               ("/", "Prefix", None, None)],  # no defaultBackend: 404
        "web.example.test": [("/healthz", "Exact", "demo/echo", "demo/demo"),
                             ("/whoami", "Prefix", "demo/whoami", "demo/merge"),
                             ("/", "Prefix", "demo/web", "demo/demo")],  # the first "/" wins
        "*.apps.example.test": [("/", "Prefix", "demo/whoami", "demo/wild")],
        "_": [("/", "Prefix", None, None)],
    }
    assert [s.host for s in plan.ingress_servers] == [
        "api.example.test", "paths.example.test", "web.example.test", "*.apps.example.test", "_"]
    conflicts = [str(w) for w in plan.warnings if "already routed" in str(w)]
    assert conflicts == [
        "m.yaml:105: Ingress demo/merge: spec.rules[0].http.paths[1]: host web.example.test path "
        "/ (Prefix) is already routed by Ingress demo/demo; the first wins; fix: route each "
        "host and path in one Ingress"]


def test_a_default_backend_without_rules_answers_unknown_hosts_first_one_wins() -> None:
    plan = make_plan(service("web") + service("api") + ing("a", """\
        defaultBackend: {service: {name: web, port: {number: 80}}}
        """) + ing("b", """\
        defaultBackend: {service: {name: api, port: {number: 80}}}
        """))
    assert served(plan) == {"_": [("/", "Prefix", "default/web", "default/a")]}
    assert any("the default backend of unknown hosts is already Ingress default/a's" in str(w)
               for w in plan.warnings)


def test_rules_without_host_join_the_catch_all_server() -> None:
    plan = make_plan(service("web") + ing("i", f"""\
        rules: [{{http: {{paths: [{path("/x", "Exact", "web", 80)}]}}}}]
        """))
    assert served(plan) == {"_": [("/x", "Exact", "default/web", "default/i"),
                                  ("/", "Prefix", None, None)]}


# -- the controller's input ------------------------------------------------------------------------
def test_the_input_has_upstreams_of_observed_endpoints_and_the_certificates() -> None:
    cert, key = make_pair(["web.example.test", "api.example.test"])
    plan = make_plan(DEMO_SERVICES + secret("demo-tls", cert, key, "demo")
                     + DEMO_INGRESSES.replace(
                         "  ingressClassName: nginx\n  defaultBackend",
                         "  ingressClassName: nginx\n  tls: [{hosts: [web.example.test], "
                         "secretName: demo-tls}]\n  defaultBackend", 1)
                     + "".join(_deployment(n) for n in ("web", "api", "echo", "whoami")))
    web = plan.service("demo/web")
    observed = {pod: f"10.244.0.{i}" for i, pod in enumerate(web.pods, 2)}
    got = ingress.config(plan, observed)
    assert json.loads(json.dumps(got)) == got
    assert {k: got[k] for k in ("version", "class", "http_port", "https_port", "health_port",
                                "default_certificate")} == {
        "version": 1, "class": "nginx", "http_port": 80, "https_port": 443, "health_port": 10254,
        "default_certificate": None}
    assert got["certificates"] == {"demo/demo-tls": {"cert": cert, "key": key}}
    first = got["servers"][2]
    assert (first["host"], first["certificate"], first["ssl_redirect"]) == (
        "web.example.test", "demo/demo-tls", True)
    assert first["locations"][-1] == {"path": "/", "type": "Prefix", "upstream": "demo-web-80",
                                      "ingress": "demo/demo"}
    assert got["servers"][-1] == {"host": "_", "certificate": None, "ssl_redirect": False,
                                  "locations": [{"path": "/", "type": "Prefix",
                                                 "upstream": None, "ingress": None}]}
    assert got["upstreams"]["demo-web-80"] == {
        "service": "demo/web", "port": 80,
        "endpoints": [{"pod": p, "ip": observed[p], "port": 8080} for p in web.pods]}
    assert got["upstreams"]["demo-api-80"]["endpoints"] == []  # none observed yet


def _deployment(name: str) -> str:
    from modelkit import deployment

    return deployment(name, 2, "demo")


def test_the_filter_gives_the_same_input_from_the_plan_data() -> None:
    from nodekit import ROOT, load

    filters = load("podnet_model_filter", ROOT / "plugins/filter/podnet_model.py")
    plan = make_plan(DEMO_SERVICES + DEMO_INGRESSES + _deployment("web"))
    pods = [{"namespace": p.namespace, "name": p.name, "ip": f"10.244.1.{i}"}
            for i, p in enumerate(plan.pods, 2)]
    data = json.loads(json.dumps(plan.data()))
    via_filter = filters.FilterModule().filters()["podnet_ingress"](data, pods)
    assert via_filter == ingress.config(plan, {f"{p['namespace']}/{p['name']}": p["ip"]
                                               for p in pods})
    assert Plan.from_data(data).data() == data


# -- the add-on and its settings -------------------------------------------------------------------
AN_INGRESS = service("web") + ing(
    "i", "defaultBackend: {service: {name: web, port: {number: 80}}}\n")


def test_without_an_ingress_there_is_no_controller() -> None:
    plan = make_plan(service("web"))
    assert not [p for p in plan.pods if p.namespace == "ingress-nginx"]
    assert [s.key for s in plan.services] == ["kube-system/kube-dns", "default/web"]
    assert plan.ingress_classes == [] and plan.ingress_servers == []


def test_the_add_on_runs_the_controller_behind_a_local_load_balancer() -> None:
    plan = make_plan(AN_INGRESS)
    svc = plan.ingress_service
    assert (svc.type, svc.external_traffic_policy, svc.addon) == ("LoadBalancer", "Local", True)
    assert [(p.name, p.port) for p in svc.ports] == [("http", 80), ("https", 443)]
    pods = [p for p in plan.pods if p.namespace == "ingress-nginx"]
    assert len(pods) == 2 and len({p.node for p in pods}) == 2 and all(p.addon for p in pods)
    controller = pods[0].containers[0]
    assert controller.workload["command"] == [
        plan.paths.tool("podnet-ingress"), "run", "--input", plan.paths.ingress_input,
        "--unready", plan.paths.unready_pods, "--pods-dir", plan.paths.pods_dir,
        "--namespace", "ingress-nginx"]
    assert controller.readiness == {"kind": "http", "port": 10254, "path": "/healthz",
                                    "period": 2, "timeout": 1, "failure": 3, "success": 1}
    assert [c.workload["kind"] for c in pods[0].containers] == ["command", "nginx"]


def test_without_a_pool_the_controller_service_is_a_node_port() -> None:
    plan = make_plan(AN_INGRESS, variables={"podnet_lb_pool": ""})
    assert plan.ingress_service.type == "NodePort"
    assert all(p.node_port for p in plan.ingress_service.ports)


def test_replicas_default_to_at_most_the_nodes_and_are_checked() -> None:
    one = make_plan(AN_INGRESS, host_list=hosts(1))
    assert len([p for p in one.pods if p.namespace == "ingress-nginx"]) == 1
    assert ("podnet_ingress_replicas: 4 controller pods on 3 nodes" in
            "\n".join(errors_of(AN_INGRESS, variables={"podnet_ingress_replicas": 4})))
    assert ("podnet_ingress_replicas: '0' must be 1 or more" in
            "\n".join(errors_of(variables={"podnet_ingress_replicas": 0})))


def test_the_default_certificate_must_be_a_tls_secret_of_the_manifests() -> None:
    cert, key = make_pair(["ingress.podnet.test"])
    plan = make_plan(AN_INGRESS + secret("default-tls", cert, key, "ingress-nginx"),
                     variables={"podnet_ingress_default_certificate": "ingress-nginx/default-tls"})
    assert [t.ref for t in plan.tls_secrets] == ["ingress-nginx/default-tls"]
    assert ingress.config(plan, {})["default_certificate"] == "ingress-nginx/default-tls"
    assert "ingress-nginx/default-tls (default)" in report.render(plan)
    missing = "\n".join(errors_of(AN_INGRESS,
                                   variables={"podnet_ingress_default_certificate": "a/b"}))
    assert "podnet_ingress_default_certificate: 'a/b' is not a Secret of the manifests" in missing
    opaque = "\n".join(errors_of(
        AN_INGRESS + "---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\n",
        variables={"podnet_ingress_default_certificate": "default/s"}))
    assert ("inv: inventory: podnet_ingress_default_certificate: 'default/s' is a Secret of type "
            "Opaque, not kubernetes.io/tls") in opaque
    bad = "\n".join(errors_of(variables={"podnet_ingress_default_certificate": "nope"}))
    assert "podnet_ingress_default_certificate: 'nope' is not namespace/name" in bad


def test_a_prefix_path_with_a_trailing_slash_is_the_same_prefix() -> None:
    plan = make_plan(service("web") + ing("i", f"""\
        rules:
          - host: a.example.test
            http:
              paths:
                - {path("/aaa/", "Prefix", "web", 80)}
                - {path("/aaa", "Prefix", "web", 80)}
                - {path("/bbb/", "Exact", "web", 80)}
        """))
    assert served(plan)["a.example.test"][:2] == [("/bbb/", "Exact", "default/web", "default/i"),
                                                  ("/aaa", "Prefix", "default/web", "default/i")]
    assert any("path /aaa (Prefix) is already routed by Ingress default/i" in str(w)
               for w in plan.warnings)


def test_two_paths_making_one_nginx_location_are_a_conflict_the_first_wins() -> None:
    """Prefix /aaa is nginx's ``^~ /aaa/``, as is ImplementationSpecific /aaa/: nginx would
    refuse a file with both, so the second is dropped with a warning."""
    plan = make_plan(service("web") + service("api") + ing("i", f"""\
        rules:
          - host: a.example.test
            http:
              paths:
                - {path("/aaa", "Prefix", "web", 80)}
                - {path("/aaa/", "ImplementationSpecific", "api", 80)}
                - {path("/", "ImplementationSpecific", "api", 80)}
                - {path("/", "Prefix", "web", 80)}
        """))
    assert served(plan)["a.example.test"] == [("/aaa", "Prefix", "default/web", "default/i"),
                                              ("/", "ImplementationSpecific", "default/api",
                                               "default/i")]
    found = [str(w).split(": ", 3)[3] for w in plan.warnings]
    assert found == [
        "host a.example.test path /aaa/ (ImplementationSpecific) is the same nginx location as "
        "path /aaa (Prefix), routed by Ingress default/i; the first wins; fix: route each host "
        "and path in one Ingress",
        "host a.example.test path / (Prefix) is the same nginx location as path / "
        "(ImplementationSpecific), routed by Ingress default/i; the first wins; fix: route each "
        "host and path in one Ingress"]
