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
    if svc == "machine":
        st = ok("Status", stub.Status(pb.StatusRequest(), timeout=timeout))
        cls = st.machine_class_status[0].machine_class.name
        m = pb.Machine(metadata=meta.ObjectMetadata(labels=labels), spec=pb.MachineSpec(power=pb.POWER_ON, **{"class": cls}))
        created = ok("Create", stub.CreateMachine(pb.CreateMachineRequest(machine=m), timeout=timeout)).machine
        oid = created.metadata.id
        listed = ok("List", stub.ListMachines(pb.ListMachinesRequest(), timeout=timeout)).machines
        assert any(x.metadata.id == oid for x in listed), "created machine not listed"
        one = ok("List(id)", stub.ListMachines(pb.ListMachinesRequest(filter=pb.MachineFilter(id=oid)), timeout=timeout)).machines
        assert [x.metadata.id for x in one] == [oid], one
        ok("Delete", stub.DeleteMachine(pb.DeleteMachineRequest(machine_id=oid), timeout=timeout))
        unknown = lambda: stub.DeleteMachine(pb.DeleteMachineRequest(machine_id="c0ffee" + "0" * 57), timeout=timeout)
    elif svc == "volume":
        st = ok("Status", stub.Status(pb.StatusRequest(), timeout=timeout))
        cls = st.volume_class_status[0].volume_class.name
        vol = pb.Volume(metadata=meta.ObjectMetadata(labels=labels), spec=pb.VolumeSpec(resources=pb.VolumeResources(storage_bytes=1 << 20), **{"class": cls}))
        created = ok("Create", stub.CreateVolume(pb.CreateVolumeRequest(volume=vol), timeout=timeout)).volume
        oid = created.metadata.id
        listed = ok("List", stub.ListVolumes(pb.ListVolumesRequest(), timeout=timeout)).volumes
        assert any(x.metadata.id == oid for x in listed), "created volume not listed"
        one = ok("List(id)", stub.ListVolumes(pb.ListVolumesRequest(filter=pb.VolumeFilter(id=oid)), timeout=timeout)).volumes
        assert [x.metadata.id for x in one] == [oid], one
        ok("Delete", stub.DeleteVolume(pb.DeleteVolumeRequest(volume_id=oid), timeout=timeout))
        unknown = lambda: stub.DeleteVolume(pb.DeleteVolumeRequest(volume_id="c0ffee" + "0" * 57), timeout=timeout)
    else:
        classes = ok("ListBucketClasses", stub.ListBucketClasses(pb.ListBucketClassesRequest(), timeout=timeout))
        cls = classes.bucket_classes[0].name
        b = pb.Bucket(metadata=meta.ObjectMetadata(labels=labels), spec=pb.BucketSpec(**{"class": cls}))
        created = ok("Create", stub.CreateBucket(pb.CreateBucketRequest(bucket=b), timeout=timeout)).bucket
        oid = created.metadata.id
        listed = ok("List", stub.ListBuckets(pb.ListBucketsRequest(), timeout=timeout)).buckets
        assert any(x.metadata.id == oid for x in listed), "created bucket not listed"
        ok("Delete", stub.DeleteBucket(pb.DeleteBucketRequest(bucket_id=oid), timeout=timeout))
        unknown = lambda: stub.DeleteBucket(pb.DeleteBucketRequest(bucket_id="c0ffee" + "0" * 57), timeout=timeout)
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
