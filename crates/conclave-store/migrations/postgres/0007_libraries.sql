-- Libraries and their documents. A library's name and description are sealed under the tenant's
-- key (TEK); its own key (LEK) is stored only wrapped by the tenant's master key (KEK) and seals
-- its documents' names and wraps each document version's key (FEK). Deleting a row destroys the
-- key it holds (crypto-shredding); the objects in the object store are removed with it.
CREATE TABLE libraries (
    tenant_id   UUID NOT NULL REFERENCES tenants (tenant_id),
    library_id  UUID NOT NULL,
    name        BYTEA NOT NULL,
    description BYTEA,
    legal_hold  BOOLEAN NOT NULL DEFAULT FALSE,
    wrapped_key BYTEA NOT NULL,
    key_version BIGINT,
    created_by  UUID NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, library_id)
);

CREATE TABLE library_members (
    tenant_id  UUID NOT NULL,
    library_id UUID NOT NULL,
    user_id    UUID NOT NULL,
    role       TEXT NOT NULL CHECK (role IN ('reader', 'editor', 'manager')),
    added_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, library_id, user_id),
    FOREIGN KEY (tenant_id, library_id) REFERENCES libraries (tenant_id, library_id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, user_id) ON DELETE CASCADE
);
CREATE INDEX library_members_user ON library_members (tenant_id, user_id, library_id);

-- `name_tag` is a keyed hash (under the LEK) of the normalised name: a re-upload with the same
-- name finds its document without the name ever being stored in clear.
CREATE TABLE documents (
    tenant_id       UUID NOT NULL,
    document_id     UUID NOT NULL,
    library_id      UUID NOT NULL,
    name            BYTEA NOT NULL,
    name_tag        BYTEA NOT NULL,
    current_version BIGINT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, document_id),
    FOREIGN KEY (tenant_id, library_id) REFERENCES libraries (tenant_id, library_id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX documents_library_name ON documents (tenant_id, library_id, name_tag);
CREATE INDEX documents_library ON documents (tenant_id, library_id, document_id);

CREATE TABLE document_versions (
    tenant_id    UUID NOT NULL,
    document_id  UUID NOT NULL,
    version      BIGINT NOT NULL,
    object_key   TEXT NOT NULL,
    size         BIGINT NOT NULL,
    content_type TEXT NOT NULL,
    sha256       BYTEA NOT NULL,
    wrapped_key  BYTEA NOT NULL,
    created_by   UUID NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, document_id, version),
    FOREIGN KEY (tenant_id, document_id) REFERENCES documents (tenant_id, document_id) ON DELETE CASCADE
);

-- The KEK version each key is wrapped under, for rotation and `conclave keys status`; NULL for
-- keys wrapped before this column existed (rotation reads the version from the wrapped bytes).
ALTER TABLE tenant_keys ADD COLUMN key_version BIGINT;
ALTER TABLE conversations ADD COLUMN key_version BIGINT;
