-- A journal as release 5 of the schema left it (PRAGMA user_version 5), dumped from a file the code of
-- commit aaaab90 wrote: two pushes accepted and one ignored, a deployment that succeeded with its
-- transitions and a notification, one queued to retry. tests/unit/test_journal.py upgrades it.
PRAGMA user_version = 5;
BEGIN TRANSACTION;
CREATE TABLE deployments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    push_id INTEGER REFERENCES pushes(id),
    service TEXT NOT NULL,
    repository TEXT NOT NULL,
    image TEXT NOT NULL,
    tag TEXT NOT NULL,
    trigger TEXT NOT NULL,
    pinned_ref TEXT,
    digest TEXT,
    image_ref TEXT,
    previous_image TEXT,
    state TEXT NOT NULL,
    message TEXT,
    superseded_by INTEGER REFERENCES deployments(id),
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before TEXT,
    update_marker TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT
, first_failed_at TEXT, nodes TEXT, request_id TEXT);
INSERT INTO "deployments" VALUES(1,1,'api','acme/api','reg:5000/acme/api','1.0.0','dockerhub',NULL,'sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa','reg:5000/acme/api:1.0.0@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa','reg:5000/acme/api:0.9.0','succeeded','update completed',NULL,0,NULL,NULL,'2026-12-06T02:20:16.008+00:00','2026-12-06T02:20:16.013+00:00','2026-12-06T02:20:16.010+00:00','2026-12-06T02:20:16.013+00:00',NULL,'node-1,node-2','req-1');
INSERT INTO "deployments" VALUES(2,3,'api','acme/api','reg:5000/acme/api','1.1.0','manual',NULL,NULL,NULL,NULL,'queued','Docker unreachable',NULL,1,'2026-12-06T03:20:16.018+00:00',NULL,'2026-12-06T02:20:16.016+00:00','2026-12-06T02:20:16.018+00:00',NULL,NULL,'2026-12-06T02:20:16.018+00:00',NULL,NULL);
CREATE TABLE notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id INTEGER NOT NULL REFERENCES deployments(id),
    at TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT
);
INSERT INTO "notifications" VALUES(1,1,'2026-12-06T02:20:16.015+00:00','json://127.0.0.1:…','sent',NULL);
CREATE TABLE pushes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    trigger TEXT NOT NULL,
    repository TEXT,
    tag TEXT,
    pusher TEXT,
    client TEXT,
    callback_url TEXT,
    outcome TEXT NOT NULL,
    reason TEXT
, request_id TEXT);
INSERT INTO "pushes" VALUES(1,'2026-12-06T02:20:16.008+00:00','dockerhub','acme/api','1.0.0','alice','10.0.0.1','https://registry.hub.docker.com/u/acme/api/hook/x/','accepted',NULL,'req-1');
INSERT INTO "pushes" VALUES(2,'2026-12-06T02:20:16.016+00:00','dockerhub','acme/other','x',NULL,NULL,NULL,'ignored','no rule for acme/other',NULL);
INSERT INTO "pushes" VALUES(3,'2026-12-06T02:20:16.016+00:00','manual','acme/api','1.1.0',NULL,NULL,NULL,'accepted',NULL,NULL);
CREATE TABLE transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id INTEGER NOT NULL REFERENCES deployments(id),
    at TEXT NOT NULL,
    state TEXT NOT NULL,
    message TEXT
);
INSERT INTO "transitions" VALUES(1,1,'2026-12-06T02:20:16.008+00:00','queued','Docker Hub push of 1.0.0');
INSERT INTO "transitions" VALUES(2,1,'2026-12-06T02:20:16.010+00:00','running','claimed by the executor');
INSERT INTO "transitions" VALUES(3,1,'2026-12-06T02:20:16.013+00:00','succeeded','update completed');
INSERT INTO "transitions" VALUES(4,2,'2026-12-06T02:20:16.016+00:00','queued','manual deployment of 1.1.0');
INSERT INTO "transitions" VALUES(5,2,'2026-12-06T02:20:16.018+00:00','queued','Docker unreachable');
CREATE INDEX deployments_by_service_state ON deployments(service, state);
CREATE INDEX transitions_by_deployment ON transitions(deployment_id);
CREATE INDEX notifications_by_deployment ON notifications(deployment_id);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('pushes',3);
INSERT INTO "sqlite_sequence" VALUES('deployments',2);
INSERT INTO "sqlite_sequence" VALUES('transitions',5);
INSERT INTO "sqlite_sequence" VALUES('notifications',1);
COMMIT;
