-- The keyring: who may read and manage it, and what it accepts.
\set ECHO none
\i tests/pg_regress/fixtures.psql
\set ECHO all

-- A plain role can neither read nor change keys, but can read the public JWKS.
set role regress_app;
select error_of('select * from auth.keys');
select error_of(format('select auth.add_key(%L, %L, %L)', 'mine', 'HS256', repeat('s', 32)));
select error_of('select auth.import_jwks(''{"keys": []}'')');
select error_of('select auth.retire_key(''regress-hs'')');
select jsonb_path_query_array(auth.jwks(), '$.keys[*].kid') as public_kids,
       jsonb_path_exists(auth.jwks(), '$.keys[*] ? (exists(@.k) || exists(@.d))') as exposes_secrets;
reset role;

-- A member of session_auth_admin manages keys.
set role regress_key_admin;
select name, error_of(statement) as error
from (values
    ('HS256 secret of 31 bytes', format('select auth.add_key(%L, %L, %L)', 'x', 'HS256', repeat('s', 31))),
    ('HS384 secret of 47 bytes', format('select auth.add_key(%L, %L, %L)', 'x', 'HS384', repeat('s', 47))),
    ('HS512 secret of 63 bytes', format('select auth.add_key(%L, %L, %L)', 'x', 'HS512', repeat('s', 63))),
    ('alg none', format('select auth.add_key(%L, %L, %L)', 'x', 'none', repeat('s', 32))),
    ('ES512', format('select auth.add_key(%L, %L, %L)', 'x', 'ES512', :'ec_pem')),
    ('RSA key of 1024 bits', format('select auth.add_key(%L, %L, %L)', 'x', 'RS256', :'rsa1024_pem')),
    ('P-384 key for ES256', format('select auth.add_key(%L, %L, %L)', 'x', 'ES256', :'p384_pem')),
    ('RSA key for ES256', format('select auth.add_key(%L, %L, %L)', 'x', 'ES256', :'rsa_pem')),
    ('EC key for EdDSA', format('select auth.add_key(%L, %L, %L)', 'x', 'EdDSA', :'ec_pem')),
    ('private key', format('select auth.add_key(%L, %L, %L)', 'x', 'RS256', '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----')),
    ('JWK for encryption', format('select auth.add_key(%L, %L, %L)', 'x', 'EdDSA', (:'ed_jwk'::jsonb || '{"use": "enc"}')::text)),
    ('empty kid', format('select auth.add_key(%L, %L, %L)', '', 'HS256', repeat('s', 32)))
) as cases(name, statement);

-- A JWK works as well as PEM; adding an existing kid replaces it.
select auth.add_key('regress-ed-jwk', 'EdDSA', :'ed_jwk');
select auth.add_key('regress-ed-jwk', 'EdDSA', :'ed_pem');
select count(*) from auth.keys where kid = 'regress-ed-jwk';

-- import_jwks takes every usable public key and reports what it skips.
select auth.import_jwks(jsonb_build_object('keys', jsonb_build_array(
    :'ed_jwk'::jsonb || '{"kid": "jwks-ed"}',
    :'ed_jwk'::jsonb,
    :'ed_jwk'::jsonb || '{"kid": "jwks-enc", "use": "enc"}',
    '{"kid": "jwks-oct", "kty": "oct", "k": "c2VjcmV0"}'::jsonb,
    '{"kid": "jwks-x448", "kty": "OKP", "crv": "Ed448", "x": "AAAA"}'::jsonb
))) as imported;
select error_of('select auth.import_jwks(''{"keys": 5}'')');

-- Retiring a key rejects its tokens from then on; retiring twice reports false.
select auth.retire_key('regress-rs') as retired, auth.retire_key('regress-rs') as again;
reset role;
set role regress_app;
select error_of(format('select auth.verify(%L)', :'rs256'));
select auth.verify(:'valid') ->> 'sub' as hs256_still_valid;
reset role;

set role regress_key_admin;
select auth.add_key('regress-rs', 'RS256', :'rsa_pem');
select auth.retire_key('regress-ed-jwk'), auth.retire_key('jwks-ed');
reset role;
