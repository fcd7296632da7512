-- The keyring: who may read and manage it, and what it accepts.
-- fixtures: begin (written by generate.py)
\set hs_secret 'regress-hmac-secret-0123456789-abcdef'
\set rsa_pem '-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAq7K5jzqKqcNk5lzV37uE\nHMAS1l8rvV1FRS3FIy5/ORtULWNZm1xa0GNwg1F+tznWt3lGrnKbBnh4pAaXzmG2\nZvZ3fPoRFdYJcex51f2YcDIb+tgIMqnFCVnCa4Kt4q4JoSJaVz0xB3yoejH0qqDs\nnmVTl7oaj7AN3tZOisSMIRYErJwKesC7acyU0ZFBgOAw3/bWZyCuxvFHhQlp3l/C\n7Tf2CeKjaBbO7Dql8HeOn8aOwraXCTIiKnwod3kPBME7im7Jap2pbwlz9ervxMgr\nmvcJWm7MYz6mK8wRaiBPJDJGvTyrOME3pv9zWU+HMearAwF6RzTlWICCaKwI3gma\n/QIDAQAB\n-----END PUBLIC KEY-----\n'
\set ec_pem '-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAESHL6jihkZq0eFvnIJ/W4fclK4u6E\nd/RdKJ4oykGCWCdxwPSdiPSewR5LwGLJCsD2lxbJJWoV4+sD4M8xnSnjRQ==\n-----END PUBLIC KEY-----\n'
\set ed_pem '-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEApV6BrFsDSKqPF45LPu9MvOGROFxO2Z/Akn/L9n40aRQ=\n-----END PUBLIC KEY-----\n'
\set p384_pem '-----BEGIN PUBLIC KEY-----\nMHYwEAYHKoZIzj0CAQYFK4EEACIDYgAE6eASlLqNVuZKIike+7dxfNp5fGuoQtrq\nJSvchTsFT9azS2s2E815OZ1pZFPpSv2bbZK9Kx8Dr9vO256rpI11DGtU2nicvs1N\nL1wzjpkGnX3HGtauJlmK2xzO8rpwh1Cq\n-----END PUBLIC KEY-----\n'
\set rsa1024_pem '-----BEGIN PUBLIC KEY-----\nMIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDPVtT+SnAzqHT0DCZ/HVoFCaKg\nD8b6M04Kr9vq+1XRbWiaBbohCPsQpTMByYZInPZY9Mna1layNbjulMoCZ05Fexeh\nWcuMz1jTmFJ/nC0G1h/lYBVxGlQsj2BxbX7TS0XhI0odXXwRKYY2wD2Pztvrr3CX\nX2MWUCPetR779hDSiQIDAQAB\n-----END PUBLIC KEY-----\n'
\set ed_jwk '{"x": "pV6BrFsDSKqPF45LPu9MvOGROFxO2Z_Akn_L9n40aRQ", "kty": "OKP", "crv": "Ed25519"}'
\set valid 'eyJhbGciOiJIUzI1NiIsImtpZCI6InJlZ3Jlc3MtaHMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwfQ.Ft7X-43PcKzQREvqApgFb0c8YM6oCEnFHXFxUXon3kg'
\set valid_other 'eyJhbGciOiJIUzI1NiIsImtpZCI6InJlZ3Jlc3MtaHMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiI3ZDJlOWMxNC02YjNhLTRmNTgtOWUwMS0zYzhhNWI2ZDdlMmYiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYm9iQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwfQ.qiGBP-1VIrOeJf_ob2OyV8DSor5DS28QQvOXin1M8-U'
\set no_kid 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwfQ.kmfhR_r9D-wuWczj6oN54QmTYQ15XEPnC6tV8rdrua4'
\set rs256 'eyJhbGciOiJSUzI1NiIsImtpZCI6InJlZ3Jlc3MtcnMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwfQ.cxYEr74DNHcZXKgT2Rh9o1Pg2DASxYQwCnFjx62lye3aZ7RGJXsHvhXu5PYzmTWnwJ_8_JHL0G0uzjLFSo_UZaOn9nsu87rH4PhR8_dmbV7iFRNvGNK68HIrxdcMesqAw474MtG3qmGDCmkGE4zjbmRJZHlXPas6e7rmBZ7SSeYjg9Z5hqpiBMuJuXPIO_D_soM3ckue7Dwl9j3kVIGI7z6avNnVwS5lXNtnWZ-JhyUqhfGGpvrH7rAy4bd7S_7Ih6bJM53Xvn3eDJZyCpZqe21Jl4amdFtl0k8xJdpU8XuyKIyLjBcLudXkU5zdxXvQpSCrBPCzHQQJi707LAtv2g'
\set es256 'eyJhbGciOiJFUzI1NiIsImtpZCI6InJlZ3Jlc3MtZXMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwfQ.gqCRf1pHHPduW4mSB2iF6Bcp_ZfujWFtA_GfrVNEDJ8qLtj51T2eYrDeC7oOsVsPXPbFG4Ej3dZkdR5BVjF7xw'
\set eddsa 'eyJhbGciOiJFZERTQSIsImtpZCI6InJlZ3Jlc3MtZWQiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwfQ.U_4cXczpsuRXvOKd_sMhUUZtPjKBZAQ1_Q3qHZ7tnplUQiMXYNTX-TuoZspLdwBNlUDA1W-6civoQH2w8aLrBA'
\set expired 'eyJhbGciOiJIUzI1NiIsImtpZCI6InJlZ3Jlc3MtaHMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjoxMDAwMDAwMDAwfQ.cuUinB_3HFjsHHnGsR0nVe9BWlyo-_GGewRN2ldIPXk'
\set no_exp 'eyJhbGciOiJIUzI1NiIsImtpZCI6InJlZ3Jlc3MtaHMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAifQ.Ioer-TF-Dajdrsb00gyliC51O6GDF1aNVtN5UTF1HbE'
\set not_yet 'eyJhbGciOiJIUzI1NiIsImtpZCI6InJlZ3Jlc3MtaHMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwLCJuYmYiOjQxMDI0NDQ3OTB9.WsGNPGyo8mbcfYijqI16Q5TLQ-2ImPOCGznlqe2nndo'
\set future_iat 'eyJhbGciOiJIUzI1NiIsImtpZCI6InJlZ3Jlc3MtaHMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwLCJpYXQiOjQxMDI0NDQ3OTB9.Aku27gbG0Mdtr-GkCPe8xpm96JxnjvanCud7HqTaRHo'
\set exp_string 'eyJhbGciOiAiSFMyNTYiLCAia2lkIjogInJlZ3Jlc3MtaHMifQ.eyJzdWIiOiAiMGI0ZjhhNTYtMmYxYy00YTNlLThkNzctNWM5ZTFiMmEzZDQwIiwgInJvbGUiOiAiYXV0aGVudGljYXRlZCIsICJlbWFpbCI6ICJhZGFAZXhhbXBsZS5jb20iLCAiZXhwIjogIm5ldmVyIn0.AyXsYFwdIHq9Xs5m3ykQ5EkvYDZ3MFDhXri-YRCGRWU'
\set aud_number 'eyJhbGciOiJIUzI1NiIsImtpZCI6InJlZ3Jlc3MtaHMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwLCJhdWQiOjEyM30.PPDdNkF1a5fUgJrQP4XYDap3NAmbar6T63lfgpZuStM'
\set iss_object 'eyJhbGciOiAiSFMyNTYiLCAia2lkIjogInJlZ3Jlc3MtaHMifQ.eyJzdWIiOiAiMGI0ZjhhNTYtMmYxYy00YTNlLThkNzctNWM5ZTFiMmEzZDQwIiwgInJvbGUiOiAiYXV0aGVudGljYXRlZCIsICJlbWFpbCI6ICJhZGFAZXhhbXBsZS5jb20iLCAiZXhwIjogNDEwMjQ0NDgwMCwgImlzcyI6IHt9fQ.aOc2iezOnSCewDHazs-TR0e30OBlPp9bu9F-tYufXTU'
\set with_iss_aud 'eyJhbGciOiJIUzI1NiIsImtpZCI6InJlZ3Jlc3MtaHMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwLCJpc3MiOiJodHRwczovL2lzc3Vlci5leGFtcGxlIiwiYXVkIjpbIndlYiIsImFwaSJdfQ.-YMOJc2EFPloiKBTzHm4j-43RE00MhgjFQKzTMF89kA'
\set wrong_iss 'eyJhbGciOiJIUzI1NiIsImtpZCI6InJlZ3Jlc3MtaHMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwLCJpc3MiOiJodHRwczovL2V2aWwuZXhhbXBsZSIsImF1ZCI6ImFwaSJ9.S8za1nKhtkDmZcU3vHoYHnBgvwcYmJht1FL0-HQZMG8'
\set nul_claim 'eyJhbGciOiAiSFMyNTYiLCAia2lkIjogInJlZ3Jlc3MtaHMifQ.eyJzdWIiOiAiMGI0ZjhhNTYtMmYxYy00YTNlLThkNzctNWM5ZTFiMmEzZDQwIiwgInJvbGUiOiAiYXV0aGVudGljYXRlZCIsICJlbWFpbCI6ICJhZGFAZXhhbXBsZS5jb20iLCAiZXhwIjogNDEwMjQ0NDgwMCwgIm5hbWUiOiAiYVx1MDAwMGIifQ.bQJ907rON_8ED9MnQGmcUG6AMf5uSPSSZtwxwFYb5zw'
\set alg_none 'eyJhbGciOiJub25lIiwia2lkIjoicmVncmVzcy1ocyJ9.eyJzdWIiOiAiMGI0ZjhhNTYtMmYxYy00YTNlLThkNzctNWM5ZTFiMmEzZDQwIiwgInJvbGUiOiAiYXV0aGVudGljYXRlZCIsICJlbWFpbCI6ICJhZGFAZXhhbXBsZS5jb20iLCAiZXhwIjogNDEwMjQ0NDgwMH0.'
\set alg_none_sig 'eyJhbGciOiJub25lIiwia2lkIjoicmVncmVzcy1ocyJ9.eyJzdWIiOiAiMGI0ZjhhNTYtMmYxYy00YTNlLThkNzctNWM5ZTFiMmEzZDQwIiwgInJvbGUiOiAiYXV0aGVudGljYXRlZCIsICJlbWFpbCI6ICJhZGFAZXhhbXBsZS5jb20iLCAiZXhwIjogNDEwMjQ0NDgwMH0.AAAA'
\set unknown_kid 'eyJhbGciOiJIUzI1NiIsImtpZCI6Im5vYm9keSIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwfQ.lLkMl52ODaLH8DNSC5Yw338fuhn3AKT9WIZJlQSgpt0'
\set mismatch 'eyJhbGciOiJIUzI1NiIsImtpZCI6InJlZ3Jlc3MtcnMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwfQ.VgtSLEVaLgujrjkHs-0esuQ8JknZ70PAMNExWI3jQw8'
\set confused 'eyJhbGciOiAiSFMyNTYiLCAia2lkIjogInJlZ3Jlc3MtcnMifQ.eyJzdWIiOiAiMGI0ZjhhNTYtMmYxYy00YTNlLThkNzctNWM5ZTFiMmEzZDQwIiwgInJvbGUiOiAiYXV0aGVudGljYXRlZCIsICJlbWFpbCI6ICJhZGFAZXhhbXBsZS5jb20iLCAiZXhwIjogNDEwMjQ0NDgwMH0.qGLH-7xiDJvEWxoiirYkPZTXFducpppMb54US610ptY'
\set jku 'eyJhbGciOiJIUzI1NiIsImprdSI6Imh0dHBzOi8vYXR0YWNrZXIuZXhhbXBsZS9qd2tzLmpzb24iLCJraWQiOiJyZWdyZXNzLWhzIiwidHlwIjoiSldUIn0.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwfQ.5ivJXa4viM6KT6Q3cuNEGeF9-tdOJL-JpuzwM-5SRWU'
\set crit 'eyJhbGciOiJIUzI1NiIsImNyaXQiOlsiZXhwIl0sImtpZCI6InJlZ3Jlc3MtaHMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwfQ.FVCTZFTWglMYU9PFukTzzeRViNDkZ1MiRazLbEpkW4c'
\set embedded_jwk 'eyJhbGciOiJIUzI1NiIsImp3ayI6eyJrIjoiQUFBQSIsImt0eSI6Im9jdCJ9LCJraWQiOiJyZWdyZXNzLWhzIiwidHlwIjoiSldUIn0.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwfQ.e5EeOkpdxgUFfC2JdCwsOZZ9PM_nRHRkH7ijIbgTMO4'
\set bad_sig 'eyJhbGciOiJIUzI1NiIsImtpZCI6InJlZ3Jlc3MtaHMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwfQ.y5KD3L3vPq7Wm9IpNUqNIdn09BVP-wNRbfjN-MMzKE0'
\set duplicate_sub 'eyJhbGciOiAiSFMyNTYiLCAia2lkIjogInJlZ3Jlc3MtaHMifQ.eyJzdWIiOiJmaXJzdCIsInN1YiI6IjBiNGY4YTU2LTJmMWMtNGEzZS04ZDc3LTVjOWUxYjJhM2Q0MCIsImV4cCI6NDEwMjQ0NDgwMH0.OWIKpED5aTHWyFqr_45SX1d1nH6c0ijCEQS-t9H5PkU'
-- fixtures: end

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
