-- The keyring: who may read and manage it, and what it accepts.
-- fixtures: begin (written by generate.py)
\set hs_secret 'regress-hmac-secret-0123456789-abcdef'
\set rsa_pem '-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAxJxPAn01Ge1Xf2CPM5wt\niUb/0MptG7/jCWvdix4NNi9ZYJluwr68buHl6qkEGG+bPOyz2pHKfP+pWxf+PixG\nmZOeBpqRs3fl4zDTctgj7ayggtisr84OCd0YwagVizWBv+iCX8o568zeeafc680L\n3hdxJhbo049R8IaqCadFGhgpP9mPLeyfNAFHLgksYvJJtvRz6nuNpkVUWFO4hlVX\nkNmaPXBgcZ7jUoBdxVeHJ7A7i3D33VaUti4ZdY3m/OUqctbyTAGE15YxL4a6jZFa\nTLqBsDZRf9ygLRtxhYfQG22Jnqfg79VSXVX84Nl1kgvngyDR9IazHp144Eie+Xx2\nZwIDAQAB\n-----END PUBLIC KEY-----\n'
\set ec_pem '-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEGPfEUd0kF6ECj15NauOENkQrsthv\n44rkXiUNEJ+o4isewj64eGIGdclX/R7Ezoqd5IYME6kCY/0MyvM1enrBiw==\n-----END PUBLIC KEY-----\n'
\set ed_pem '-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEApvJaXc9ha+WMx4QIOjx42YZ9xxcj+qzok18rz/3QeRE=\n-----END PUBLIC KEY-----\n'
\set p384_pem '-----BEGIN PUBLIC KEY-----\nMHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEg4NIsA8PUvYggpqPODCB20i+qa86zD71\nOD8s3vNN4SXi20tbj77TZ80i2Q/S5GeFv+Ft1bgFG5e40KQet1dyuw49Ajf7q15I\n9rsDkEMYmWvnTNvKWbRj03wpSkXCFD06\n-----END PUBLIC KEY-----\n'
\set rsa1024_pem '-----BEGIN PUBLIC KEY-----\nMIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDU5EiRpmH7WGaFh6D3HZoTvZx2\ntywM6KphAOHacvkALPlubev8cagwy8v+3Jg7xLWaLj3tH11V/jwIJTAGBelxQpyW\nCCoYj3W4SEBI79P7VYQbS1b1gi323/Gwk52P+F8QBECBMpR2d7FLObXftDGTLp0r\nM0dvsw5kK59hP7ZPOwIDAQAB\n-----END PUBLIC KEY-----\n'
\set ed_jwk '{"x": "pvJaXc9ha-WMx4QIOjx42YZ9xxcj-qzok18rz_3QeRE", "kty": "OKP", "crv": "Ed25519"}'
\set valid 'eyJhbGciOiJIUzI1NiIsImtpZCI6InJlZ3Jlc3MtaHMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwfQ.Ft7X-43PcKzQREvqApgFb0c8YM6oCEnFHXFxUXon3kg'
\set valid_other 'eyJhbGciOiJIUzI1NiIsImtpZCI6InJlZ3Jlc3MtaHMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiI3ZDJlOWMxNC02YjNhLTRmNTgtOWUwMS0zYzhhNWI2ZDdlMmYiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYm9iQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwfQ.qiGBP-1VIrOeJf_ob2OyV8DSor5DS28QQvOXin1M8-U'
\set no_kid 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwfQ.kmfhR_r9D-wuWczj6oN54QmTYQ15XEPnC6tV8rdrua4'
\set rs256 'eyJhbGciOiJSUzI1NiIsImtpZCI6InJlZ3Jlc3MtcnMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwfQ.IpxYjFOKQlutItd3OesodrAhdDZteuCAjS1Ll0POJwOg3vn70SkDAL2xO668qXVbRDrwVO9brXbqD-EH-vK0_7a0i-ukuItAX4k_lUNNLkCsVSEI4fKrPTUeHZdLGy5uTuvvPjQEHmAbOeRtW4kHMXt8jW6JtcwV3KXz1gcRH1CnQ9qRmqiAN1TgPHBzGzucn3fYzcsPfEhCshWwwkb7tx7Jis_Sz15U6qCGAJFzo0vz4COFaqYSbNWyyvdWnjUrwOpkiwhKT8cEsvghnD1HHuaRcaS94D9rXRrsXBA4s8_Akm_3VbEoFNtzKqvJYTxQ4pKv4ryVR5KP_fRyrMG2NQ'
\set es256 'eyJhbGciOiJFUzI1NiIsImtpZCI6InJlZ3Jlc3MtZXMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwfQ.0BQgUdRZ4vXP_0To0O99YrlWQ3hhJeaTWZt27BQaH1RDZjk3Iz1c_qYtb4zy2SdcycbfyXgLJHr5ZGWe2ThZyw'
\set eddsa 'eyJhbGciOiJFZERTQSIsImtpZCI6InJlZ3Jlc3MtZWQiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwfQ.sLXRvnHmaCW2M9Ys-IxVR41kxGS1pAygbpOug6PIhCksrc3B4yqkqq8qLrUlisrZAu-WSFYg3is1a0zGAVHMAg'
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
\set confused 'eyJhbGciOiAiSFMyNTYiLCAia2lkIjogInJlZ3Jlc3MtcnMifQ.eyJzdWIiOiAiMGI0ZjhhNTYtMmYxYy00YTNlLThkNzctNWM5ZTFiMmEzZDQwIiwgInJvbGUiOiAiYXV0aGVudGljYXRlZCIsICJlbWFpbCI6ICJhZGFAZXhhbXBsZS5jb20iLCAiZXhwIjogNDEwMjQ0NDgwMH0.cP4qNXbARYTbUP0P7-jLD_zaJrA4LY_5pDmr6fzYfMA'
\set jku 'eyJhbGciOiJIUzI1NiIsImprdSI6Imh0dHBzOi8vYXR0YWNrZXIuZXhhbXBsZS9qd2tzLmpzb24iLCJraWQiOiJyZWdyZXNzLWhzIiwidHlwIjoiSldUIn0.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwfQ.5ivJXa4viM6KT6Q3cuNEGeF9-tdOJL-JpuzwM-5SRWU'
\set crit 'eyJhbGciOiJIUzI1NiIsImNyaXQiOlsiZXhwIl0sImtpZCI6InJlZ3Jlc3MtaHMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwfQ.FVCTZFTWglMYU9PFukTzzeRViNDkZ1MiRazLbEpkW4c'
\set embedded_jwk 'eyJhbGciOiJIUzI1NiIsImp3ayI6eyJrIjoiQUFBQSIsImt0eSI6Im9jdCJ9LCJraWQiOiJyZWdyZXNzLWhzIiwidHlwIjoiSldUIn0.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwfQ.e5EeOkpdxgUFfC2JdCwsOZZ9PM_nRHRkH7ijIbgTMO4'
\set bad_sig 'eyJhbGciOiJIUzI1NiIsImtpZCI6InJlZ3Jlc3MtaHMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwfQ.y5KD3L3vPq7Wm9IpNUqNIdn09BVP-wNRbfjN-MMzKE0'
\set alice 'eyJhbGciOiJIUzI1NiIsImtpZCI6InJlZ3Jlc3MtaHMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwLCJzZXNzaW9uX2lkIjoiNWU3YzJiMWEtOWQzZi00ZThhLWI2YzQtMWYyZTNkNGM1YjZhIn0.taKOfLoiaBO4bRuvASX7fcy-8oKD2gyUllhO32vd-dg'
\set bob 'eyJhbGciOiJIUzI1NiIsImtpZCI6InJlZ3Jlc3MtaHMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiI3ZDJlOWMxNC02YjNhLTRmNTgtOWUwMS0zYzhhNWI2ZDdlMmYiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYm9iQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwfQ.qiGBP-1VIrOeJf_ob2OyV8DSor5DS28QQvOXin1M8-U'
\set anon 'eyJhbGciOiJIUzI1NiIsImtpZCI6InJlZ3Jlc3MtaHMiLCJ0eXAiOiJKV1QifQ.eyJyb2xlIjoiYW5vbiIsImV4cCI6NDEwMjQ0NDgwMH0.6YkcAj5mOJoCq7ohhTdtzPpiMcwpnA3Cwfv71AyD1IY'
\set no_role 'eyJhbGciOiJIUzI1NiIsImtpZCI6InJlZ3Jlc3MtaHMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAiLCJleHAiOjQxMDI0NDQ4MDB9.48849NHeWubhWFCwEzGD9d3ntweDMXy7OSfw8nlaDXw'
\set role_postgres 'eyJhbGciOiJIUzI1NiIsImtpZCI6InJlZ3Jlc3MtaHMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAiLCJyb2xlIjoicG9zdGdyZXMiLCJlbWFpbCI6ImFkYUBleGFtcGxlLmNvbSIsImV4cCI6NDEwMjQ0NDgwMH0.ZOrI0NDXk4RomffxOsXM-fLDa17YSqNvR2DxtSwoAK0'
\set role_empty 'eyJhbGciOiJIUzI1NiIsImtpZCI6InJlZ3Jlc3MtaHMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAiLCJyb2xlIjoiIiwiZW1haWwiOiJhZGFAZXhhbXBsZS5jb20iLCJleHAiOjQxMDI0NDQ4MDB9.c2h35jEtLlP_fs26Lod8AJtRPBu516uDz_BgJDL9bKY'
\set role_quoted 'eyJhbGciOiJIUzI1NiIsImtpZCI6InJlZ3Jlc3MtaHMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAiLCJyb2xlIjoiXCJhdXRoZW50aWNhdGVkXCIiLCJlbWFpbCI6ImFkYUBleGFtcGxlLmNvbSIsImV4cCI6NDEwMjQ0NDgwMH0.0sCiIgniTv0yTJr98vFiM1Fxi0vZTh3uoxAWaCeTFUE'
\set role_unknown 'eyJhbGciOiJIUzI1NiIsImtpZCI6InJlZ3Jlc3MtaHMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAiLCJyb2xlIjoibm9fc3VjaF9yb2xlIiwiZW1haWwiOiJhZGFAZXhhbXBsZS5jb20iLCJleHAiOjQxMDI0NDQ4MDB9.CCjEDobAtCP0vUdRkqS98oV6KirjNmoF5zyHn5vHvqw'
\set role_number 'eyJhbGciOiJIUzI1NiIsImtpZCI6InJlZ3Jlc3MtaHMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAiLCJyb2xlIjo1LCJlbWFpbCI6ImFkYUBleGFtcGxlLmNvbSIsImV4cCI6NDEwMjQ0NDgwMH0.7EdpHJ-F6YdtG1GvjIBVHZKVwFwoUh-2AEivlL2o0zk'
\set non_uuid_sub 'eyJhbGciOiJIUzI1NiIsImtpZCI6InJlZ3Jlc3MtaHMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiJhdXRoMHwxMjM0NSIsInJvbGUiOiJhdXRoZW50aWNhdGVkIiwiZW1haWwiOiJhZGFAZXhhbXBsZS5jb20iLCJleHAiOjQxMDI0NDQ4MDB9.tn1Wk6VPuVwstsMbEM_zCuflTRVB2DUlpRW9iMJ3e7M'
\set rev_a1 'eyJhbGciOiJIUzI1NiIsImtpZCI6InJlZ3Jlc3MtaHMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiJjMGZmZWUwMC0xMTExLTQyMjItODMzMy00NDQ0NTU1NTY2NjYiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwLCJpYXQiOjE3MDAwMDAwMDAsInNlc3Npb25faWQiOiJhMWExYTFhMS0wMDAwLTQwMDAtODAwMC0wMDAwMDAwMDAwMDEifQ.zu6SAdy4gEA-eB3mjYpmDz48QSDSSVacRys_g9DxzUs'
\set rev_a2 'eyJhbGciOiJIUzI1NiIsImtpZCI6InJlZ3Jlc3MtaHMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiJjMGZmZWUwMC0xMTExLTQyMjItODMzMy00NDQ0NTU1NTY2NjYiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwLCJpYXQiOjE3MDAwMDAwMDAsInNlc3Npb25faWQiOiJhMmEyYTJhMi0wMDAwLTQwMDAtODAwMC0wMDAwMDAwMDAwMDIifQ.OHNBuYMdFvT9vUD1_zHy-RtqW4V_Rjfgx2_KqvJvXVY'
\set rev_a3 'eyJhbGciOiJIUzI1NiIsImtpZCI6InJlZ3Jlc3MtaHMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiJjMGZmZWUwMC0xMTExLTQyMjItODMzMy00NDQ0NTU1NTY2NjYiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwLCJpYXQiOjE3MDAwMDAwMDAsInNpZCI6ImEzYTNhM2EzLTAwMDAtNDAwMC04MDAwLTAwMDAwMDAwMDAwMyJ9.CWMt9RauBie0NpC73PK-urmvygv3DqQAKviXOmteliE'
\set rev_a_jti 'eyJhbGciOiJIUzI1NiIsImtpZCI6InJlZ3Jlc3MtaHMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiJjMGZmZWUwMC0xMTExLTQyMjItODMzMy00NDQ0NTU1NTY2NjYiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwLCJpYXQiOjE3MDAwMDAwMDAsImp0aSI6InJlZ3Jlc3MtanRpLTEifQ.zR4rlBw1WlXEncZvRo8PnRkv--Wu1-GEa7guwDH7qO0'
\set rev_a_no_iat 'eyJhbGciOiJIUzI1NiIsImtpZCI6InJlZ3Jlc3MtaHMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiJjMGZmZWUwMC0xMTExLTQyMjItODMzMy00NDQ0NTU1NTY2NjYiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwLCJzZXNzaW9uX2lkIjoiYTRhNGE0YTQtMDAwMC00MDAwLTgwMDAtMDAwMDAwMDAwMDA0In0.RZWAP2ZEVgYvbdvetR8Mo2R-MyPJZ5S9SPespr4IyHs'
\set rev_b1 'eyJhbGciOiJIUzI1NiIsImtpZCI6InJlZ3Jlc3MtaHMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiJkZWNhZGUwMC0xMTExLTQyMjItODMzMy00NDQ0NTU1NTY2NjYiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwLCJpYXQiOjE3MDAwMDAwMDAsInNlc3Npb25faWQiOiJiMWIxYjFiMS0wMDAwLTQwMDAtODAwMC0wMDAwMDAwMDAwMDEifQ.s9_4SLZu_SYal1JcrsP52Ann-6huT8br2SE66PELtYQ'
\set rev_b_jti 'eyJhbGciOiJIUzI1NiIsImtpZCI6InJlZ3Jlc3MtaHMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiJkZWNhZGUwMC0xMTExLTQyMjItODMzMy00NDQ0NTU1NTY2NjYiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwLCJpYXQiOjE3MDAwMDAwMDAsImp0aSI6InJlZ3Jlc3MtanRpLTIifQ.7lIWltPWIPc6DkEVjxsNCbct_owPi09XySz62WpL5FE'
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
