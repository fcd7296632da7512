-- auth.verify as a non-superuser: the success path and every rejection, with its SQLSTATE.
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
set role regress_app;

-- Valid tokens, one per key type; claims come back as parsed jsonb.
select auth.verify(:'valid');
select auth.verify(:'rs256') = auth.verify(:'valid') as rs256_same_claims,
       auth.verify(:'es256') = auth.verify(:'valid') as es256_same_claims,
       auth.verify(:'eddsa') = auth.verify(:'valid') as eddsa_same_claims;
-- Duplicate claim names are resolved once, by the parser: the last one wins.
select auth.verify(:'duplicate_sub') ->> 'sub' as sub;

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
