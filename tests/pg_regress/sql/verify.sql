-- auth.verify as a non-superuser: the success path and every rejection, with its SQLSTATE.
\set ECHO none
\i tests/pg_regress/fixtures.psql
\set ECHO all
set role regress_app;

-- Valid tokens, one per key type; claims come back as parsed jsonb.
select auth.verify(:'valid');
select auth.verify(:'rs256') = auth.verify(:'valid') as rs256_same_claims,
       auth.verify(:'es256') = auth.verify(:'valid') as es256_same_claims,
       auth.verify(:'eddsa') = auth.verify(:'valid') as eddsa_same_claims;
-- A claim named twice: parsers disagree on which wins, so the token is malformed.
select error_of(format('select auth.verify(%L)', :'duplicate_sub')) as duplicate_sub;

-- Several keys are active, so a token without kid cannot pick one.
select error_of(format('select auth.verify(%L)', :'no_kid'));

-- Every rejection is SQLSTATE 28000 with one reason.
select name, error_of(format('select auth.verify(%L)', token)) as error
from (values
    ('empty', ''),
    ('two parts', 'eyJhbGciOiJIUzI1NiJ9.e30'),
    ('four parts', :'valid' || '.e30'),
    ('padding', :'valid' || '='),
    ('not base64url', 'eyJhbGciOiJIUzI1NiJ9.e30.a+b/'),
    ('too large', repeat('a', 8193)),
    ('alg none, empty signature', :'alg_none'),
    ('alg none', :'alg_none_sig'),
    ('unknown kid', :'unknown_kid'),
    ('HS256 token for an RS256 key', :'mismatch'),
    ('HS256 signed with the RSA PEM', :'confused'),
    ('jku header', :'jku'),
    ('crit header', :'crit'),
    ('embedded jwk', :'embedded_jwk'),
    ('bad signature', :'bad_sig'),
    ('expired', :'expired'),
    ('no exp', :'no_exp'),
    ('nbf in the future', :'not_yet'),
    ('iat in the future', :'future_iat'),
    ('exp is a string', :'exp_string'),
    ('aud is a number', :'aud_number'),
    ('iss is an object', :'iss_object'),
    ('NUL in a claim', :'nul_claim')
) as cases(name, token);

-- A NULL token is rejected, never passed through as a NULL identity. Never IMMUTABLE.
select error_of('select auth.verify(null)');
select provolatile, proparallel from pg_proc where oid = 'auth.verify'::regproc;

reset role;
