-- Libraries and their documents. A library's name and description are sealed under the tenant's
-- key (TEK); its own key (LEK) is stored only wrapped by the tenant's master key (KEK) and seals
-- its documents' names and wraps each document version's key (FEK). Deleting a row destroys the
-- key it holds (crypto-shredding); the objects in the object store are removed with it.
CREATE TABLE libraries (
    tenant_id   BLOB NOT NULL REFERENCES tenants (tenant_id),
    library_id  BLOB NOT NULL,
    name        BLOB NOT NULL,
    description BLOB,
    legal_hold  INTEGER NOT NULL DEFAULT 0,
    wrapped_key BLOB NOT NULL,
    key_version INTEGER,
    created_by  BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, library_id)
) WITHOUT ROWID;

CREATE TABLE library_members (
    tenant_id  BLOB NOT NULL,
    library_id BLOB NOT NULL,
    user_id    BLOB NOT NULL,
    role       TEXT NOT NULL CHECK (role IN ('reader', 'editor', 'manager')),
    added_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, library_id, user_id),
    FOREIGN KEY (tenant_id, library_id) REFERENCES libraries (tenant_id, library_id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, user_id) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX library_members_user ON library_members (tenant_id, user_id, library_id);

-- `name_tag` is a keyed hash (under the LEK) of the normalised name: a re-upload with the same
-- name finds its document without the name ever being stored in clear.
CREATE TABLE documents (
    tenant_id       BLOB NOT NULL,
    document_id     BLOB NOT NULL,
    library_id      BLOB NOT NULL,
    name            BLOB NOT NULL,
    name_tag        BLOB NOT NULL,
    current_version INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, document_id),
    FOREIGN KEY (tenant_id, library_id) REFERENCES libraries (tenant_id, library_id) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE UNIQUE INDEX documents_library_name ON documents (tenant_id, library_id, name_tag);
CREATE INDEX documents_library ON documents (tenant_id, library_id, document_id);

CREATE TABLE document_versions (
    tenant_id    BLOB NOT NULL,
    document_id  BLOB NOT NULL,
    version      INTEGER NOT NULL,
    object_key   TEXT NOT NULL,
    size         INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    sha256       BLOB NOT NULL,
    wrapped_key  BLOB NOT NULL,
    created_by   BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, document_id, version),
    FOREIGN KEY (tenant_id, document_id) REFERENCES documents (tenant_id, document_id) ON DELETE CASCADE
) WITHOUT ROWID;

-- The KEK version each key is wrapped under, for rotation and `conclave keys status`; NULL for
-- keys wrapped before this column existed (rotation reads the version from the wrapped bytes).
ALTER TABLE tenant_keys ADD COLUMN key_version INTEGER;
ALTER TABLE conversations ADD COLUMN key_version INTEGER;
