-- auth.authenticate and the claim functions: binding, scoping, forgery, roles, planning.
-- fixtures: begin (written by generate.py)
\set hs_secret 'regress-hmac-secret-0123456789-abcdef'
\set rsa_pem '-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAs61SJylifS9tBRYnZiWx\nXPpTsmeHVfdpSVPZPGZoovUqMLIz0/bmlc3bazF6v4c4puSJJB26RuVu7ZCGeOgh\nQtNK1sdi01arnd4gFj0HqyYrj4vAUZtR0mdkp51jvWY0t9RcZqqkr2bFatFpaW4I\nojI57OMi7c4yQdcCzjcybCJiaZLs6DOjKkC80cDBdmpyY9oYEqkHuHQyZfYL7/HJ\nZ0G4vcbjbvV/SKwER7IxOiJzit3IxXLLphjXH8B9YkqPUKe+lfc59KnmPEEQxdx8\nIeApjNEEeXNj6XECtFVSUg8EM1tMromfnQv5nEaYmNjVeaaZIXulH4kxAuNWmr1Y\nWQIDAQAB\n-----END PUBLIC KEY-----\n'
\set ec_pem '-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEu7TtzvZVD4XvCsaBeHTaSPf7ZBq6\nA8G+IAgupBQ2ntH59Ww/2uY/ynQ5BbESE7x7PPmZUtPeIHxeUDruWTyaNg==\n-----END PUBLIC KEY-----\n'
\set ed_pem '-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEACdiDGHM35VQuxvyzAJoZkTtTaWArfHeIPR8oprEOU1g=\n-----END PUBLIC KEY-----\n'
\set p384_pem '-----BEGIN PUBLIC KEY-----\nMHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEZZGPAGCkodPt5MIt93HfbkMaBnYmTXQl\nBQ/sEDHrMrK0OAtmjkPEMRiJux16nq90ullf2UN/C0T7nyZN9lx9sDy77xBzFdpv\nrgLwkScMzq91p1BqW9oWZx/7hnEPaInt\n-----END PUBLIC KEY-----\n'
\set rsa1024_pem '-----BEGIN PUBLIC KEY-----\nMIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDDXejz5w396GKz3LKTH+7hxQsw\nW736BqYs4AgFoal8WcVv5idtfbUc9/WNyLI/m/DlgyO39Ac+UJk4/zRZWgHdxntR\nxxaf8yfVmEY2KcWt6H3mca6DPfsCOmVrA26Sw70VFMGVrHGjGLbKtWP7dY5Qg9+P\nzbYtfvjybA4s1lOAJwIDAQAB\n-----END PUBLIC KEY-----\n'
\set ed_jwk '{"x": "CdiDGHM35VQuxvyzAJoZkTtTaWArfHeIPR8oprEOU1g", "kty": "OKP", "crv": "Ed25519"}'
\set valid 'eyJhbGciOiJIUzI1NiIsImtpZCI6InJlZ3Jlc3MtaHMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwfQ.Ft7X-43PcKzQREvqApgFb0c8YM6oCEnFHXFxUXon3kg'
\set valid_other 'eyJhbGciOiJIUzI1NiIsImtpZCI6InJlZ3Jlc3MtaHMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiI3ZDJlOWMxNC02YjNhLTRmNTgtOWUwMS0zYzhhNWI2ZDdlMmYiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYm9iQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwfQ.qiGBP-1VIrOeJf_ob2OyV8DSor5DS28QQvOXin1M8-U'
\set no_kid 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwfQ.kmfhR_r9D-wuWczj6oN54QmTYQ15XEPnC6tV8rdrua4'
\set rs256 'eyJhbGciOiJSUzI1NiIsImtpZCI6InJlZ3Jlc3MtcnMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwfQ.si8VW9k6zVQnD6JVa1RKsfdYAqLerXCcU_pe0rH3mALZkc0tLGDh4ESOqE4ARKUrcXVYAOXXo1zJF_0Wss9y5vu7Bj5FrauMir87MwnX7wiLJ_FkPD6LT-VN3Z1n5bxBO9zdZ6k4But-pLR7IMBAsFV2epyszYq6pDe-7GZ3_0tCrNWkaJ2mMEZdlHkinr2CIJUq7HosHRKyhEOvPTbJ9rCM5_ghv4cwxLrkJBDywPh5d4TYctGOP71lCRJWTgYRqjtDMG1zwEPtcs15ypOe9tiPjR-Aj8F58RTLYt9kMiW2XAfyl5DeolrrNs25yiQpBUsc-EKqXLsDuY3mN4ePZw'
\set es256 'eyJhbGciOiJFUzI1NiIsImtpZCI6InJlZ3Jlc3MtZXMiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwfQ.c06Qh8fZiXhac_tSw4OdSdw4eFjcPYZYuHBdOlpPZ9953dJFxfvkNYOtkdJ5gtyR_W_QN6Fqo1QfMJ7PxRsxXw'
\set eddsa 'eyJhbGciOiJFZERTQSIsImtpZCI6InJlZ3Jlc3MtZWQiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiIwYjRmOGE1Ni0yZjFjLTRhM2UtOGQ3Ny01YzllMWIyYTNkNDAiLCJyb2xlIjoiYXV0aGVudGljYXRlZCIsImVtYWlsIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwIjo0MTAyNDQ0ODAwfQ._DEgf_UELolNhrJYqyKmguOfvovPQc6fZrzp5KkwcWA6kUhFJ5GXjpGlGDLR9bjghf0J12onRQU7QQQp05FJAg'
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
\set confused 'eyJhbGciOiAiSFMyNTYiLCAia2lkIjogInJlZ3Jlc3MtcnMifQ.eyJzdWIiOiAiMGI0ZjhhNTYtMmYxYy00YTNlLThkNzctNWM5ZTFiMmEzZDQwIiwgInJvbGUiOiAiYXV0aGVudGljYXRlZCIsICJlbWFpbCI6ICJhZGFAZXhhbXBsZS5jb20iLCAiZXhwIjogNDEwMjQ0NDgwMH0.jIT4G8wW3yP2tNAajj8P2yNl22153y15nqCrwicr138'
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
\set duplicate_sub 'eyJhbGciOiAiSFMyNTYiLCAia2lkIjogInJlZ3Jlc3MtaHMifQ.eyJzdWIiOiJmaXJzdCIsInN1YiI6IjBiNGY4YTU2LTJmMWMtNGEzZS04ZDc3LTVjOWUxYjJhM2Q0MCIsImV4cCI6NDEwMjQ0NDgwMH0.OWIKpED5aTHWyFqr_45SX1d1nH6c0ijCEQS-t9H5PkU'
-- fixtures: end
create table public.todos (id int primary key, user_id uuid not null, task text not null);
insert into public.todos values
    (1, '0b4f8a56-2f1c-4a3e-8d77-5c9e1b2a3d40', 'ada: write the paper'),
    (2, '0b4f8a56-2f1c-4a3e-8d77-5c9e1b2a3d40', 'ada: review'),
    (3, '7d2e9c14-6b3a-4f58-9e01-3c8a5b6d7e2f', 'bob: fix the roof');
alter table public.todos enable row level security;
create policy own_todos on public.todos using (user_id = auth.uid());
grant select on public.todos to authenticated, anon;

set role regress_authenticator;
-- Without authenticate there is no identity, and RLS shows nothing.
select auth.uid(), auth.jwt(), auth.role(), auth.email(), auth.user_id(), auth.session_id();

-- Bound for the transaction, with the role the token names.
begin;
select auth.authenticate(:'alice') ->> 'sub' as sub;
select current_user, auth.uid(), auth.role(), auth.email(), auth.session_id();
select * from public.todos order by id;
select current_setting('request.jwt.claims')::jsonb = auth.jwt() as request_claims_set;
commit;
select current_user, auth.uid() is null as no_identity_after_commit;

-- The claim functions are planned once per statement, not once per row.
set role authenticated;
explain (costs off) select * from public.todos where user_id = auth.uid();
set role regress_authenticator;

-- A client cannot forge the identity with settings.
begin;
select auth.authenticate(:'alice') ->> 'email' as email;
set local request.jwt.claims = '{"sub": "7d2e9c14-6b3a-4f58-9e01-3c8a5b6d7e2f", "role": "authenticated"}';
set local request.jwt.claim.sub = '7d2e9c14-6b3a-4f58-9e01-3c8a5b6d7e2f';
select auth.email() as still_alice, count(*) as alices_rows from public.todos;
select error_of('set pg_session_auth.claims = ''{"sub": "7d2e9c14-6b3a-4f58-9e01-3c8a5b6d7e2f"}''');
select error_of('select set_config(''pg_session_auth.claims'', ''{}'', true)');
select error_of('select current_setting(''pg_session_auth.claims'')');
reset role;
select auth.email() as still_alice;
rollback;

-- Savepoints: ROLLBACK TO undoes a later authenticate; a second call replaces the first.
begin;
select auth.authenticate(:'alice') ->> 'email';
savepoint before_bob;
select auth.authenticate(:'bob') ->> 'email';
select auth.email(), count(*) as bobs_rows from public.todos;
rollback to before_bob;
select auth.email(), count(*) as alices_rows from public.todos;
select auth.authenticate(:'anon') ->> 'role';
select current_user, auth.uid(), count(*) as anon_rows from public.todos;
commit;

-- Subjects that are not UUIDs: uid() is NULL, user_id() has the text.
begin;
select auth.authenticate(:'non_uuid_sub') is not null;
select auth.uid(), auth.user_id();
rollback;

-- Role claims: only allowed, existing, non-superuser roles the session user may become.
select name, error_of(format('select auth.authenticate(%L)', token)) as error
from (values
    ('role postgres', :'role_postgres'),
    ('empty role', :'role_empty'),
    ('quoted role', :'role_quoted'),
    ('unknown role', :'role_unknown'),
    ('role is a number', :'role_number'),
    ('expired token', :'expired'),
    ('bad signature', :'bad_sig'),
    ('NUL in a claim', :'nul_claim'),
    ('NULL token', null)
) as cases(name, token);
-- A token without a role claim keeps the current role.
begin;
select auth.authenticate(:'no_role') ->> 'sub';
select current_user, auth.uid();
rollback;
reset role;
