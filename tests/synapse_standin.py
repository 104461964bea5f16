"""A local Synapse stand-in the REAL synapseclient can be pointed at (tests only).

An aiohttp app on 127.0.0.1 in its own thread (like tests/origin.py) answering
the calls synapseclient 4.x makes, under the usual endpoint paths:

    GET  /repo/v1/userProfile                         login (Bearer token checked)
    POST /repo/v1/entity/{id}/bundle2                 entity bundle (+ /version/{v}/bundle2)
    POST /file/v1/fileHandle/batch                    file handles + presigned URLs
    GET  /s3/{fileHandleId}/{name}?X-Amz-...          the "bucket": signed URL, Range, 206
    upload: POST /repo/v1/entity/child, GET /file/v1/entity/{id}/uploadDestination,
            POST /file/v1/file/multipart, .../presigned/url/batch, PUT /s3-upload/...,
            PUT .../add/{n}, PUT .../complete, GET /file/v1/fileHandle/{id},
            POST /repo/v1/entity, PUT /repo/v1/entity/{id}, GET /repo/v1/entity/{id}, ...
    POST /repo/v1/entity/children                     a container's children, paginated
                                                      (``children_page`` per page)

Access: ``public`` files download anonymously; ``private`` ones answer 403 to
anonymous callers (as Synapse does without READ); ``login`` ones show the
entity to anyone but include the file handle (download permission) only for
the valid token; ``restricted`` ones never include it. A wrong token gets 401
on every endpoint. The storage route answers 400 to any request carrying an
Authorization header (as S3 does with a presigned URL), and records it.

It never answers 429 or 5xx: synapseclient would retry those for minutes.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web

from tests.origin import _send as send_file

TOKEN = "hk-test-pat-0123456789abcdef"
FILE_ENTITY = "org.sagebionetworks.repo.model.FileEntity"
FOLDER = "org.sagebionetworks.repo.model.Folder"
PROJECT = "org.sagebionetworks.repo.model.Project"
S3_HANDLE = "org.sagebionetworks.repo.model.file.S3FileHandle"
USER = {"ownerId": "3391841", "userName": "hostkit-tester", "displayName": "Hostkit Tester",
        "firstName": "Hostkit", "lastName": "Tester", "emails": ["tester@example.org"],
        "etag": "e0"}
ANONYMOUS = {"ownerId": "273950", "userName": "anonymous", "displayName": "anonymous",
             "emails": [], "etag": "e0"}


@dataclass
class Hit:
    """One request the stand-in saw."""

    method: str
    path: str
    authorization: str | None
    range: str | None


@dataclass
class Handle:
    id: str
    data: bytes
    name: str
    md5: str  # advertised contentMd5 (a test may make it wrong)
    content_type: str = "application/octet-stream"
    etag: str = field(default_factory=lambda: secrets.token_hex(8))

    def json(self) -> dict:
        return {"id": self.id, "etag": self.etag, "concreteType": S3_HANDLE,
                "createdBy": USER["ownerId"], "createdOn": "2024-01-01T00:00:00.000Z",
                "modifiedOn": "2024-01-01T00:00:00.000Z", "fileName": self.name,
                "contentType": self.content_type, "contentSize": len(self.data),
                "contentMd5": self.md5, "storageLocationId": 1, "status": "AVAILABLE",
                "bucketName": "standin-bucket", "key": f"{USER['ownerId']}/{self.id}/{self.name}",
                "isPreview": False}


@dataclass
class Entity:
    id: str
    name: str
    kind: str  # a concreteType
    parent_id: str | None
    access: str = "public"  # public | private | login | restricted
    versions: list[str] = field(default_factory=list)  # file handle id per version (1-based)
    etag: str = field(default_factory=lambda: secrets.token_hex(8))
    labels: list[str] = field(default_factory=list)

    def json(self, version: int | None = None) -> dict:
        out = {"id": self.id, "name": self.name, "etag": self.etag, "concreteType": self.kind,
               "parentId": self.parent_id, "createdBy": USER["ownerId"],
               "modifiedBy": USER["ownerId"], "createdOn": "2024-01-01T00:00:00.000Z",
               "modifiedOn": "2024-01-01T00:00:00.000Z"}
        if self.kind == FILE_ENTITY:
            v = version or len(self.versions)
            out.update(versionNumber=v, versionLabel=self.labels[v - 1] if self.labels else str(v),
                       isLatestVersion=v == len(self.versions),
                       dataFileHandleId=self.versions[v - 1])
        else:
            out.update(versionNumber=1, versionLabel="1", isLatestVersion=True)
        return out


@dataclass
class Upload:
    id: str
    name: str
    size: int
    part_size: int
    md5: str
    content_type: str
    parts: dict[int, bytes] = field(default_factory=dict)
    added: set[int] = field(default_factory=set)
    handle_id: str | None = None


class Synapse:
    """Entities, file handles and a request log shared with the server thread."""

    def __init__(self):
        self.url = ""
        self.token = TOKEN
        self.hits: list[Hit] = []
        self.entities: dict[str, Entity] = {}
        self.handles: dict[str, Handle] = {}
        self.signatures: dict[str, str] = {}  # X-Amz-Signature -> file handle id
        self.uploads: dict[str, Upload] = {}
        self.cut_once: set[str] = set()  # file handle ids whose next GET hangs up early
        #: statuses the storage route answers next, per file handle id (it is not Synapse:
        #: hostkit, not synapseclient, fetches from it, so 5xx here is safe)
        self.storage_fail: dict[str, list[int]] = {}
        #: children per page of POST /entity/children (small: tests see several pages)
        self.children_page = 2
        self._next = Counter({"entity": 2000, "handle": 90000, "upload": 1})
        self._lock = threading.Lock()
        self.project = self._entity("hostkit-project", PROJECT, None).id

    # -- test API --------------------------------------------------------------

    def _entity(self, name, kind, parent_id, access="public") -> Entity:
        with self._lock:
            self._next["entity"] += 1
            entity = Entity(f"syn{self._next['entity']}", name, kind, parent_id, access)
            self.entities[entity.id] = entity
        return entity

    def _handle(self, data: bytes, name: str, md5: str | None = None) -> Handle:
        with self._lock:
            self._next["handle"] += 1
            handle = Handle(str(self._next["handle"]), data, name,
                            md5 or hashlib.md5(data).hexdigest())
            self.handles[handle.id] = handle
        return handle

    def add_file(self, name: str, data: bytes, *, access: str = "public",
                 parent: str | None = None, md5: str | None = None) -> str:
        """A FileEntity at version 1; return its Synapse ID."""
        entity = self._entity(name, FILE_ENTITY, parent or self.project, access)
        entity.versions.append(self._handle(data, name, md5).id)
        return entity.id

    def add_version(self, entity_id: str, data: bytes) -> int:
        """A new version with new bytes; return its number."""
        entity = self.entities[entity_id]
        entity.versions.append(self._handle(data, entity.name).id)
        entity.etag = secrets.token_hex(8)
        return len(entity.versions)

    def add_folder(self, name: str, parent: str | None = None) -> str:
        return self._entity(name, FOLDER, parent or self.project).id

    def handle_of(self, entity_id: str, version: int | None = None) -> Handle:
        entity = self.entities[entity_id]
        return self.handles[entity.versions[(version or len(entity.versions)) - 1]]

    def child(self, parent_id: str, name: str) -> Entity | None:
        return next((e for e in self.entities.values()
                     if e.parent_id == parent_id and e.name == name), None)

    def requests(self, part: str = "") -> list[Hit]:
        """Requests whose path contains ``part``."""
        return [h for h in self.hits if part in h.path]

    def storage_hits(self) -> list[Hit]:
        """Requests to the presigned storage routes (downloads and part uploads)."""
        return [h for h in self.hits if h.path.startswith(("/s3/", "/s3-upload/"))]


def _error(status: int, reason: str) -> web.Response:
    return web.json_response({"reason": reason,
                              "concreteType": "org.sagebionetworks.repo.model.ErrorResponse"},
                             status=status)


def _signed_query(host: str, path: str) -> tuple[str, str]:
    signature = secrets.token_hex(32)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    query = ("X-Amz-Algorithm=AWS4-HMAC-SHA256"
             f"&X-Amz-Credential=AKIASTANDIN%2F{stamp[:8]}%2Fus-east-1%2Fs3%2Faws4_request"
             f"&X-Amz-Date={stamp}&X-Amz-Expires=30&X-Amz-SignedHeaders=host"
             f"&X-Amz-Signature={signature}")
    return f"{host}{path}?{query}", signature


def _app(syn: Synapse) -> web.Application:  # noqa: C901 (one route table)
    app = web.Application(client_max_size=64 << 20)

    @web.middleware
    async def log_and_auth(request, handler):
        auth = request.headers.get("Authorization")
        syn.hits.append(Hit(request.method, request.path, auth, request.headers.get("Range")))
        request["user"] = None
        if request.path.startswith(("/repo/", "/file/", "/auth/")) and auth is not None:
            if auth != f"Bearer {syn.token}":
                return _error(401, "Invalid access token")
            request["user"] = USER
        return await handler(request)

    app.middlewares.append(log_and_auth)

    def entity_or_error(request) -> Entity | web.Response:
        entity = syn.entities.get(request.match_info["id"])
        if entity is None:
            return _error(404, "The resource you are attempting to access cannot be found")
        if entity.access == "private" and request["user"] is None:
            return _error(403, f"The user anonymous does not have READ permission on "
                               f"{entity.id}")
        return entity

    def may_download(request, entity: Entity) -> bool:
        return entity.access == "public" or (
            entity.access in ("private", "login") and request["user"] is not None)

    async def user_profile(request):
        return web.json_response(request["user"] or ANONYMOUS)

    async def bundle(request):
        entity = entity_or_error(request)
        if isinstance(entity, web.Response):
            return entity
        version = request.match_info.get("version")
        if version is not None:
            v = int(version)
            count = len(entity.versions) if entity.kind == FILE_ENTITY else 1
            if not 1 <= v <= count:
                return _error(404, f"Cannot find a node with id {entity.id} and version {v}")
        wanted = await request.json()
        out = {}
        if wanted.get("includeEntity"):
            out["entity"] = entity.json(int(version) if version else None)
            out["entityType"] = entity.kind.rpartition(".")[2].lower()
        if wanted.get("includeAnnotations"):
            out["annotations"] = {"id": entity.id, "etag": entity.etag, "annotations": {}}
        if wanted.get("includeFileHandles"):
            handles = []
            if entity.kind == FILE_ENTITY and may_download(request, entity):
                handles = [syn.handle_of(entity.id, int(version) if version else None).json()]
            out["fileHandles"] = handles
        if wanted.get("includeRestrictionInformation"):
            out["restrictionInformation"] = {
                "objectId": int(entity.id[3:]), "restrictionLevel": "OPEN",
                "hasUnmetAccessRequirement": entity.access == "restricted",
                "concreteType": "org.sagebionetworks.repo.model.RestrictionInformationResponse"}
        return web.json_response(out)

    async def file_handle_batch(request):
        body = await request.json()
        host = syn.url
        answers = []
        for want in body.get("requestedFiles", []):
            fh_id = str(want.get("fileHandleId"))
            entity = syn.entities.get(want.get("associateObjectId", ""))
            answer = {"fileHandleId": fh_id}
            if entity is None or fh_id not in entity.versions or fh_id not in syn.handles:
                answer["failureCode"] = "NOT_FOUND"
            elif not may_download(request, entity):
                answer["failureCode"] = "UNAUTHORIZED"
            else:
                handle = syn.handles[fh_id]
                if body.get("includeFileHandles"):
                    answer["fileHandle"] = handle.json()
                if body.get("includePreSignedURLs"):
                    url, signature = _signed_query(host, f"/s3/{fh_id}/{handle.name}")
                    syn.signatures[signature] = fh_id
                    answer["preSignedURL"] = url
            answers.append(answer)
        return web.json_response({"requestedFiles": answers})

    async def storage_get(request):
        if request.headers.get("Authorization"):
            return web.Response(status=400, text="<Error><Code>InvalidArgument</Code><Message>"
                                "Only one auth mechanism allowed</Message></Error>",
                                content_type="application/xml")
        fh_id = request.match_info["fh"]
        if syn.signatures.get(request.query.get("X-Amz-Signature", "")) != fh_id:
            return web.Response(status=403, text="<Error><Code>SignatureDoesNotMatch</Code>"
                                "</Error>", content_type="application/xml")
        if syn.storage_fail.get(fh_id):
            return web.Response(status=syn.storage_fail[fh_id].pop(0), text="<Error/>",
                                content_type="application/xml")
        # cut once, 40% into the file: a client that resumes asks for the rest with Range
        data = syn.handles[fh_id].data
        cut = fh_id in syn.cut_once
        syn.cut_once.discard(fh_id)
        return await send_file(request, data, reset_at=int(len(data) * 0.4) if cut else None)

    # -- upload ------------------------------------------------------------------

    def need_user(request) -> web.Response | None:
        if request["user"] is None:
            return _error(401, "You must be logged in to do this")
        return None

    async def entity_children(request):
        """EntityChildrenRequest -> EntityChildrenResponse (``page``, ``nextPageToken``)."""
        body = await request.json()
        parent = syn.entities.get(str(body.get("parentId")))
        if parent is None:
            return _error(404, "The resource you are attempting to access cannot be found")
        if parent.access == "private" and request["user"] is None:
            return _error(403, f"The user anonymous does not have READ permission on "
                               f"{parent.id}")
        kinds = {"file": FILE_ENTITY, "folder": FOLDER, "project": PROJECT}
        wanted = {kinds[t] for t in body.get("includeTypes") or ("file", "folder")
                  if t in kinds}
        children = sorted((e for e in syn.entities.values()
                           if e.parent_id == parent.id and e.kind in wanted),
                          key=lambda e: e.name)
        start = int(body.get("nextPageToken") or 0)
        page = children[start:start + syn.children_page]
        answer = {"page": [{"id": e.id, "name": e.name, "type": e.kind,
                            "versionNumber": len(e.versions) if e.kind == FILE_ENTITY else 1,
                            "versionLabel": str(len(e.versions) or 1),
                            "benefactorId": int(syn.project[3:]), "isLatestVersion": True,
                            "createdOn": "2024-01-01T00:00:00.000Z",
                            "modifiedOn": "2024-01-01T00:00:00.000Z",
                            "createdBy": USER["ownerId"], "modifiedBy": USER["ownerId"]}
                           for e in page]}
        if start + syn.children_page < len(children):
            answer["nextPageToken"] = str(start + syn.children_page)
        return web.json_response(answer)

    async def entity_child(request):
        body = await request.json()
        found = syn.child(body.get("parentId"), body.get("entityName"))
        if found is None:
            return _error(404, "Entity not found")
        return web.json_response({"id": found.id})

    async def upload_destination(request):
        return web.json_response({
            "concreteType": "org.sagebionetworks.repo.model.file.S3UploadDestination",
            "storageLocationId": 1, "uploadType": "S3", "banner": None})

    async def multipart_start(request):
        if (refused := need_user(request)) is not None:
            return refused
        body = await request.json()
        with syn._lock:
            syn._next["upload"] += 1
            upload = Upload(str(syn._next["upload"]), body["fileName"],
                            int(body["fileSizeBytes"]), int(body["partSizeBytes"]),
                            body["contentMD5Hex"], body.get("contentType") or
                            "application/octet-stream")
            syn.uploads[upload.id] = upload
        return web.json_response(_upload_status(upload))

    def _upload_status(upload: Upload) -> dict:
        parts = max(1, -(-upload.size // upload.part_size))
        state = "".join("1" if n in upload.added else "0" for n in range(1, parts + 1))
        out = {"uploadId": upload.id, "startedBy": USER["ownerId"],
               "state": "COMPLETED" if upload.handle_id else "UPLOADING",
               "partsState": state, "updatedOn": "2024-01-01T00:00:00.000Z",
               "startedOn": "2024-01-01T00:00:00.000Z"}
        if upload.handle_id:
            out["resultFileHandleId"] = upload.handle_id
        return out

    async def presigned_part_urls(request):
        upload = syn.uploads[request.match_info["upload"]]
        body = await request.json()
        urls = []
        for n in body.get("partNumbers", []):
            url, signature = _signed_query(syn.url, f"/s3-upload/{upload.id}/{n}")
            syn.signatures[signature] = f"upload:{upload.id}:{n}"
            urls.append({"partNumber": n, "uploadPresignedUrl": url, "signedHeaders": {}})
        return web.json_response({"partPresignedUrls": urls})

    async def storage_put(request):
        if request.headers.get("Authorization"):
            return web.Response(status=400, text="Only one auth mechanism allowed")
        upload, n = request.match_info["upload"], int(request.match_info["n"])
        if syn.signatures.get(request.query.get("X-Amz-Signature", "")) != \
                f"upload:{upload}:{n}":
            return web.Response(status=403, text="SignatureDoesNotMatch")
        data = await request.read()
        syn.uploads[upload].parts[n] = data
        return web.Response(status=200, headers={"ETag": f'"{hashlib.md5(data).hexdigest()}"'})

    async def add_part(request):
        upload = syn.uploads[request.match_info["upload"]]
        n = int(request.match_info["n"])
        data = upload.parts.get(n)
        ok = data is not None and hashlib.md5(data).hexdigest() == request.query.get("partMD5Hex")
        if ok:
            upload.added.add(n)
        return web.json_response({"uploadId": upload.id, "partNumber": n,
                                  "addPartState": "ADD_SUCCESS" if ok else "ADD_FAILED",
                                  "errorMessage": None if ok else "part MD5 does not match"})

    async def complete(request):
        upload = syn.uploads[request.match_info["upload"]]
        if upload.handle_id is None:
            data = b"".join(upload.parts[n] for n in sorted(upload.parts))
            if hashlib.md5(data).hexdigest() != upload.md5 or len(data) != upload.size:
                return _error(400, "The MD5 of the uploaded file does not match")
            handle = syn._handle(data, upload.name)
            handle.content_type = upload.content_type
            upload.handle_id = handle.id
        return web.json_response(_upload_status(upload))

    async def get_file_handle(request):
        handle = syn.handles.get(request.match_info["fh"])
        if handle is None:
            return _error(404, "File handle not found")
        return web.json_response(handle.json())

    def entity_json(entity: Entity) -> dict:
        return entity.json()

    async def create_entity(request):
        if (refused := need_user(request)) is not None:
            return refused
        body = await request.json()
        if syn.child(body.get("parentId"), body.get("name")) is not None:
            return _error(409, "An entity with the name already exists")
        entity = syn._entity(body["name"], body.get("concreteType", FILE_ENTITY),
                             body.get("parentId"))
        if entity.kind == FILE_ENTITY:
            entity.versions.append(str(body["dataFileHandleId"]))
            entity.labels.append(body.get("versionLabel") or "1")
        return web.json_response(entity_json(entity), status=201)

    async def update_entity(request):
        if (refused := need_user(request)) is not None:
            return refused
        entity = entity_or_error(request)
        if isinstance(entity, web.Response):
            return entity
        body = await request.json()
        if body.get("etag") and body["etag"] != entity.etag:
            return _error(412, "Object has been updated since last read")
        fh = str(body.get("dataFileHandleId") or "")
        # Synapse makes a new version when the file handle changes (or with ?newVersion=true)
        new_version = request.query.get("newVersion", "").lower() == "true"
        if entity.kind == FILE_ENTITY and fh and (new_version or fh != entity.versions[-1]):
            entity.versions.append(fh)
            entity.labels.append(body.get("versionLabel") or str(len(entity.versions)))
        entity.etag = secrets.token_hex(8)
        return web.json_response(entity_json(entity))

    async def get_entity(request):
        entity = entity_or_error(request)
        if isinstance(entity, web.Response):
            return entity
        version = request.match_info.get("version")
        return web.json_response(entity.json(int(version) if version else None))

    async def annotations(request):
        entity = entity_or_error(request)
        if isinstance(entity, web.Response):
            return entity
        if request.method == "PUT":
            body = await request.json()
            entity.etag = secrets.token_hex(8)
            return web.json_response({**body, "etag": entity.etag})
        return web.json_response({"id": entity.id, "etag": entity.etag, "annotations": {}})

    async def not_modelled(request):
        return _error(404, f"the Synapse stand-in does not model {request.method} "
                           f"{request.path}")

    r = app.router
    r.add_get("/repo/v1/userProfile", user_profile)
    r.add_post("/repo/v1/entity/{id}/bundle2", bundle)
    r.add_post("/repo/v1/entity/{id}/version/{version}/bundle2", bundle)
    r.add_post("/file/v1/fileHandle/batch", file_handle_batch)
    r.add_get("/s3/{fh}/{name}", storage_get)
    r.add_post("/repo/v1/entity/child", entity_child)
    r.add_post("/repo/v1/entity/children", entity_children)
    r.add_get("/file/v1/entity/{id}/uploadDestination", upload_destination)
    r.add_post("/file/v1/file/multipart", multipart_start)
    r.add_post("/file/v1/file/multipart/{upload}/presigned/url/batch", presigned_part_urls)
    r.add_put("/s3-upload/{upload}/{n}", storage_put)
    r.add_put("/file/v1/file/multipart/{upload}/add/{n}", add_part)
    r.add_put("/file/v1/file/multipart/{upload}/complete", complete)
    r.add_get("/file/v1/fileHandle/{fh}", get_file_handle)
    r.add_post("/repo/v1/entity", create_entity)
    r.add_put("/repo/v1/entity/{id}", update_entity)
    r.add_get("/repo/v1/entity/{id}", get_entity)
    r.add_get("/repo/v1/entity/{id}/version/{version}", get_entity)
    r.add_route("*", "/repo/v1/entity/{id}/annotations2", annotations)
    r.add_route("*", "/{tail:.*}", not_modelled)
    return app


class SynapseServer:
    """Runs a :class:`Synapse` stand-in on 127.0.0.1 in a background thread."""

    def __init__(self):
        self.synapse = Synapse()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="synapse-standin")
        self._error: BaseException | None = None

    def _run(self):
        asyncio.set_event_loop(self._loop)
        try:
            runner = web.AppRunner(_app(self.synapse), access_log=None)
            self._loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            self._loop.run_until_complete(site.start())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()
            return
        port = site._server.sockets[0].getsockname()[1]
        self.synapse.url = f"http://127.0.0.1:{port}"
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def start(self) -> Synapse:
        """Start serving; return the stand-in (``.url`` is set)."""
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            raise RuntimeError(f"the Synapse stand-in did not start: {self._error!r}")
        return self.synapse

    def stop(self) -> None:
        """Stop serving and join the thread."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def config_text(url: str, token: str | None = None) -> str:
    """A ~/.synapseConfig pointing the client at the stand-in (and holding ``token``)."""
    out = [f"[default]\nauthtoken = {token}\n"] if token else []
    out.append("[endpoints]\n"
               f"repoEndpoint = {url}/repo/v1\nauthEndpoint = {url}/auth/v1\n"
               f"fileHandleEndpoint = {url}/file/v1\nportalEndpoint = {url}/\n")
    return "".join(out)

