#!/usr/bin/env python3
"""A stock Python grpcio client of one IRI runtime on a unix socket (issue 13).

Generates the stubs from iri-spec/proto with grpcio-tools into a temp dir, then calls Version,
Status, Create, List (all and by id), Delete and Delete of an unknown id (NOT_FOUND expected)
of the given service. `--authority default` leaves grpcio's default :authority (grpc-core >=
1.57 sends the percent-encoded socket path); `--authority raw` sends the raw socket path, as
grpc-java/netty does. Prints one line per call; exits 1 on the first unexpected answer.
"""
import argparse
import os
import sys
import tempfile


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", required=True)
    ap.add_argument("--service", choices=["machine", "volume", "bucket"], required=True)
    ap.add_argument("--proto", required=True, help="iri-spec/proto")
    ap.add_argument("--authority", choices=["default", "raw"], default="default")
    args = ap.parse_args()

    import grpc
    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix="iri-py-")
    files = [f"{p}/v1alpha1/api.proto" for p in ("meta", "event", "machine", "volume", "bucket")]
    rc = protoc.main(["protoc", f"-I{args.proto}", f"--python_out={out}", f"--grpc_python_out={out}", *files])
    if rc != 0:
        print(f"protoc failed: {rc}", file=sys.stderr)
        return 2
    sys.path.insert(0, out)
    import importlib

    pb = importlib.import_module(f"{args.service}.v1alpha1.api_pb2")
    pbg = importlib.import_module(f"{args.service}.v1alpha1.api_pb2_grpc")
    meta = importlib.import_module("meta.v1alpha1.api_pb2")

    print(f"grpcio {grpc.__version__}, authority {args.authority}")
    options = []
    if args.authority == "raw":
        options.append(("grpc.default_authority", os.path.abspath(args.socket)))
    channel = grpc.insecure_channel(f"unix:{os.path.abspath(args.socket)}", options=options)
    svc = args.service
    stub = getattr(pbg, {"machine": "MachineRuntimeStub", "volume": "VolumeRuntimeStub", "bucket": "BucketRuntimeStub"}[svc])(channel)
    labels = {"iri-conformance.irikit.dev/run-id": "python-grpcio"}
    timeout = 20

    def ok(name, resp):
        print(f"{name}: OK")
        return resp

    v = ok("Version", stub.Version(pb.VersionRequest(version="0.1.0"), timeout=timeout))
    assert v.runtime_name, "empty runtime_name"
    def create_list_delete(kind, obj, id_field, list_by_id=True):
        """Creates `obj` (a `kind`), finds it listed (and by id), deletes it; returns the Delete
        of an unknown id."""
        field = kind.lower()
        create = getattr(pb, f"Create{kind}Request")(**{field: obj})
        created = getattr(ok("Create", getattr(stub, f"Create{kind}")(create, timeout=timeout)), field)
        oid = created.metadata.id
        list_call, list_request = getattr(stub, f"List{kind}s"), getattr(pb, f"List{kind}sRequest")
        listed = getattr(ok("List", list_call(list_request(), timeout=timeout)), f"{field}s")
        assert any(x.metadata.id == oid for x in listed), f"created {field} not listed"
        if list_by_id:
            by_id = list_request(filter=getattr(pb, f"{kind}Filter")(id=oid))
            one = getattr(ok("List(id)", list_call(by_id, timeout=timeout)), f"{field}s")
            assert [x.metadata.id for x in one] == [oid], one
        delete_call, delete_request = getattr(stub, f"Delete{kind}"), getattr(pb, f"Delete{kind}Request")
        ok("Delete", delete_call(delete_request(**{id_field: oid}), timeout=timeout))
        return lambda: delete_call(delete_request(**{id_field: "c0ffee" + "0" * 57}), timeout=timeout)

    if svc == "machine":
        st = ok("Status", stub.Status(pb.StatusRequest(), timeout=timeout))
        cls = st.machine_class_status[0].machine_class.name
        m = pb.Machine(metadata=meta.ObjectMetadata(labels=labels), spec=pb.MachineSpec(power=pb.POWER_ON, **{"class": cls}))
        unknown = create_list_delete("Machine", m, "machine_id")
    elif svc == "volume":
        st = ok("Status", stub.Status(pb.StatusRequest(), timeout=timeout))
        cls = st.volume_class_status[0].volume_class.name
        vol = pb.Volume(metadata=meta.ObjectMetadata(labels=labels), spec=pb.VolumeSpec(resources=pb.VolumeResources(storage_bytes=1 << 20), **{"class": cls}))
        unknown = create_list_delete("Volume", vol, "volume_id")
    else:
        classes = ok("ListBucketClasses", stub.ListBucketClasses(pb.ListBucketClassesRequest(), timeout=timeout))
        cls = classes.bucket_classes[0].name
        b = pb.Bucket(metadata=meta.ObjectMetadata(labels=labels), spec=pb.BucketSpec(**{"class": cls}))
        unknown = create_list_delete("Bucket", b, "bucket_id", list_by_id=False)
    try:
        unknown()
        print("Delete(unknown): OK, expected NOT_FOUND")
        return 1
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.NOT_FOUND:
            print(f"Delete(unknown): {e.code()} {e.details()}, expected NOT_FOUND")
            return 1
        print("Delete(unknown): NOT_FOUND")
    print("all calls answered as expected")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # grpc.RpcError and assertion failures: one line, exit 1
        code = getattr(e, "code", None)
        detail = f"{code()} {e.details()}" if callable(code) else repr(e)
        print(f"FAILED: {detail}")
        sys.exit(1)
