"""What the S3 and Azure stores add to the contract: layout, integrity, URLs and failures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given, strategies as st
from store_servers import AzuriteServer, MotoS3Server, S3rverServer, free_port, open_test_url

from hastate.errors import CorruptDataError, SnapshotError
from hastate.snapshots.store import PreconditionFailed
from hastate.snapshots.stores import open_store
from hastate.snapshots.stores._checksum import SHA256_KEY
from hastate.snapshots.stores._etag import etag_of, generation_of


#: The S3 and Azure emulators' fixtures, each with the mark that selects it.
EMULATORS = [pytest.param("s3_server", marks=pytest.mark.s3),
             pytest.param("azure_server", marks=pytest.mark.azure)]


@pytest.fixture(params=EMULATORS)
def emulator(request: pytest.FixtureRequest) -> MotoS3Server | AzuriteServer:
    """moto's S3 server, then Azurite."""
    return request.getfixturevalue(request.param)


class TestObjectsAtRest:
    """s3:// and az:// keep each object's SHA-256 beside it and check it on every read."""

    def test_objects_live_under_the_prefix_with_their_checksum(
            self, emulator: MotoS3Server | AzuriteServer) -> None:
        """Names are prefix/name; the SHA-256 travels as metadata; the ETag is the generation."""
        bucket = emulator.create_bucket()
        url = emulator.url(bucket, "prod/east")
        store = open_test_url(url)
        generation = store.write("snapshots/a", b"abc")
        metadata, etag = emulator.stored(bucket, "prod/east/snapshots/a")
        assert metadata[SHA256_KEY] == \
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        assert generation_of(etag) == generation
        assert str(store) == url.partition("?")[0]

    def test_object_corrupted_at_rest_is_refused(
            self, emulator: MotoS3Server | AzuriteServer) -> None:
        """Bytes replaced behind the store's back no longer match the stored SHA-256."""
        bucket = emulator.create_bucket()
        store = open_test_url(emulator.url(bucket))
        store.write("snapshots/a", b"good bytes")
        emulator.overwrite(bucket, "cluster-a/snapshots/a", b"evil bytes")
        with pytest.raises(CorruptDataError, match="cluster-a/snapshots/a: SHA-256 check"):
            store.read("snapshots/a")


@pytest.mark.s3
class TestS3Store:
    """s3:// against moto's server."""

    def test_missing_bucket_names_it_and_says_to_create_it(
            self, s3_server: MotoS3Server) -> None:
        """A wrong bucket is a SnapshotError with the create command."""
        store = open_test_url(s3_server.url("no-such-bucket"))
        with pytest.raises(SnapshotError,
                           match="bucket 'no-such-bucket' does not exist.*aws s3 mb"):
            store.write("x", b"1")

    def test_unreachable_endpoint_fails_naming_the_store(self, s3_server: MotoS3Server) -> None:
        """A dead endpoint is reported with the endpoint and what to check."""
        url = f"s3://bucket/p?endpoint_url=http://127.0.0.1:{free_port()}"
        with pytest.raises(SnapshotError, match="s3://bucket/p: init failed: store unreachable"):
            open_test_url(url).list()

    def test_a_service_that_ignores_conditional_writes_is_refused(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """s3rver accepts If-None-Match and overwrites anyway: the store refuses to use it.

        s3rver only knows its own access key, given to the store as an AWS profile.
        """
        import boto3
        credentials = tmp_path / "aws-credentials"
        credentials.write_text("[s3rver]\naws_access_key_id = S3RVER\n"
                               "aws_secret_access_key = S3RVER\n")
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
        server = S3rverServer(tmp_path)
        try:
            raw = boto3.session.Session(profile_name="s3rver").client(
                "s3", endpoint_url=server.endpoint, region_name="us-east-1")
            raw.create_bucket(Bucket="ignores-conditions")
            store = open_test_url(f"s3://ignores-conditions/p?endpoint_url={server.endpoint}"
                                  "&profile=s3rver&region=us-east-1")
            with pytest.raises(SnapshotError, match="ignores conditional writes"):
                store.write("manifest.json", b"{}")
            assert raw.list_objects_v2(Bucket="ignores-conditions").get("KeyCount") == 0
        finally:
            server.stop()

    def test_unknown_profile_is_named(self, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
        """?profile= naming no profile of the AWS config files says where to add it."""
        pytest.importorskip("boto3")
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
        with pytest.raises(SnapshotError, match="AWS profile 'dr-account' not found"):
            open_store("s3://b/p?profile=dr-account").list()

    def test_if_match_on_a_missing_object_is_a_precondition_failure(
            self, s3_server: MotoS3Server) -> None:
        """Replacing an object that was deleted meanwhile fails like any stale write."""
        store = open_test_url(s3_server.url(s3_server.create_bucket()))
        generation = store.write("m", b"v1")
        store.delete("m")
        with pytest.raises(PreconditionFailed):
            store.write("m", b"v2", if_generation_match=generation)


@pytest.mark.azure
class TestAzureStore:
    """az:// against Azurite."""

    def test_every_write_of_a_blob_gets_a_new_generation(
            self, azure_server: AzuriteServer) -> None:
        """Azure ETags change per write, even of the same bytes."""
        store = open_test_url(azure_server.url(azure_server.create_bucket()))
        generation = store.write("snapshots/a", b"abc")
        assert store.write("snapshots/a", b"abc") != generation

    def test_missing_container_names_it_and_says_to_create_it(
            self, azure_server: AzuriteServer) -> None:
        """A wrong container is a SnapshotError with the create command."""
        store = open_test_url(azure_server.url("no-such-container"))
        with pytest.raises(SnapshotError, match="container 'no-such-container' does not exist"):
            store.read("x")

    def test_no_account_anywhere_names_the_environment_variables(
            self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without a connection string or account the error says which variables to set."""
        pytest.importorskip("azure.storage.blob")
        for var in ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT"):
            monkeypatch.delenv(var, raising=False)
        with pytest.raises(SnapshotError, match="AZURE_STORAGE_CONNECTION_STRING"):
            open_store("az://container/p").list()


class TestCloudURLs:
    """URL options are validated when the store is opened, before any network call."""

    @pytest.mark.parametrize("url, message", [
        ("s3:///prefix", "needs a bucket"),
        ("az:///prefix", "needs a container"),
        ("s3://b/p?endpoint=http://x", "unknown URL option 'endpoint'"),
        ("s3://b/p?endpoint_url=ftp://x", "endpoint_url 'ftp://x' must look like"),
        ("s3://b/p?region=a&region=b", "given twice"),
        ("s3://b/p?profile=", "'profile' is empty"),
        ("az://c/p?account=", "'account' is empty"),
        ("az://c/p#frag", "no #fragment"),
        ("gs:///prefix", "needs a bucket"),
        ("gs://b/p?retry=3", "unknown URL option 'retry'"),
        ("gs://b/p?retry_deadline=soon", "option retry_deadline: not a duration"),
        ("gs://b/p?retry_deadline=nan", "option retry_deadline: not a duration"),
        ("gs://b/p?retry_deadline=0", "option retry_deadline: must be at least"),
    ])
    def test_bad_cloud_urls_are_refused(self, url: str, message: str) -> None:
        """Each malformed URL names what is wrong."""
        pytest.importorskip("boto3")
        pytest.importorskip("azure.storage.blob")
        pytest.importorskip("google.cloud.storage")
        with pytest.raises(SnapshotError, match=message):
            open_store(url)

    def test_gcs_retry_deadline_comes_from_the_url(self) -> None:
        """``?retry_deadline=`` sets how long one call retries; the prefix loses the query."""
        pytest.importorskip("google.cloud.storage")
        store = open_store("gs://bucket/some/prefix?retry_deadline=2.5")
        assert (store.bucket_name, store.prefix, store.retry_deadline) == \
            ("bucket", "some/prefix", 2.5)
        assert open_store("gs://bucket/p?retry_deadline=500ms").retry_deadline == 0.5
        assert open_store("gs://bucket/p").retry_deadline == 15.0

    @pytest.mark.parametrize("scheme, module, extra", [("s3", "boto3", "s3"),
                                                       ("az", "azure.core", "azure")])
    def test_missing_sdk_names_the_extra_to_install(self, monkeypatch: pytest.MonkeyPatch,
                                                    scheme: str, module: str,
                                                    extra: str) -> None:
        """Without the SDK, opening the URL says which pip extra brings it."""
        backend = {"s3": "s3", "az": "azure"}[scheme]
        monkeypatch.delitem(sys.modules, f"hastate.snapshots.stores.{backend}", raising=False)
        monkeypatch.setitem(sys.modules, module, None)
        with pytest.raises(SnapshotError, match=rf"pip install 'hastate\[{extra}\]'"):
            open_store(f"{scheme}://bucket/prefix")

    @given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E,
                                          blacklist_characters='"'), min_size=1, max_size=80))
    def test_every_etag_round_trips_through_its_generation(self, bare: str) -> None:
        """Any ETag maps to a positive generation and back, and distinct ETags stay distinct."""
        etag = f'"{bare}"'
        generation = generation_of(etag)
        assert generation > 0 and etag_of(generation) == etag
        assert generation_of(bare) == generation          # quoting does not matter
        assert generation_of(f'"{bare}x"') != generation

    @given(st.integers(min_value=-5, max_value=2**64))
    def test_a_generation_maps_to_an_etag_only_if_it_came_from_one(self, generation: int) -> None:
        """etag_of is the inverse of generation_of where defined, None elsewhere."""
        etag = etag_of(generation)
        assert etag is None or generation_of(etag) == generation
        if generation <= 0:
            assert etag is None
