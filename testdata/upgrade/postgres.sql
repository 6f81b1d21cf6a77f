--
-- PostgreSQL database dump
--

\restrict GDf4m9lxGYFfY99olqtak2ZfykUhxI8VPhpthctz9IIRLxzCkjpkANC6XvCiwnJ

-- Dumped from database version 15.18 (Debian 15.18-0+deb12u1)
-- Dumped by pg_dump version 15.18 (Debian 15.18-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: changes; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.changes (
    seq bigint NOT NULL,
    digest bytea NOT NULL,
    at bigint NOT NULL
);


--
-- Name: changes_seq_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.changes_seq_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: changes_seq_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.changes_seq_seq OWNED BY public.changes.seq;


--
-- Name: events; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.events (
    seq bigint NOT NULL,
    at bigint NOT NULL,
    action text NOT NULL,
    key_id text NOT NULL,
    actor text DEFAULT ''::text NOT NULL,
    reason text DEFAULT ''::text NOT NULL,
    detail text DEFAULT ''::text NOT NULL
);


--
-- Name: events_seq_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.events_seq_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: events_seq_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.events_seq_seq OWNED BY public.events.seq;


--
-- Name: keys; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.keys (
    id text NOT NULL,
    digest bytea NOT NULL,
    hint text DEFAULT ''::text NOT NULL,
    name text DEFAULT ''::text NOT NULL,
    owner text DEFAULT ''::text NOT NULL,
    env text NOT NULL,
    scopes text DEFAULT '[]'::text NOT NULL,
    rate text,
    burst bigint DEFAULT 0 NOT NULL,
    allowed_ips text DEFAULT '[]'::text NOT NULL,
    sender_domains text DEFAULT '[]'::text NOT NULL,
    quota text,
    max_recipients bigint DEFAULT 0 NOT NULL,
    allow_on_behalf_of boolean DEFAULT false NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint,
    revoked_at bigint,
    revoke_reason text DEFAULT ''::text NOT NULL,
    disabled boolean DEFAULT false NOT NULL,
    last_used_at bigint,
    last_ip text DEFAULT ''::text NOT NULL,
    rotated_from text DEFAULT ''::text NOT NULL,
    rotated_to text DEFAULT ''::text NOT NULL,
    CONSTRAINT keys_digest_check CHECK ((octet_length(digest) = 32))
);


--
-- Name: schema_migrations; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.schema_migrations (
    version integer NOT NULL,
    applied_at bigint NOT NULL
);


--
-- Name: usage; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.usage (
    key_id text NOT NULL,
    hour bigint NOT NULL,
    metric text NOT NULL,
    n bigint NOT NULL
);


--
-- Name: usage_ips; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.usage_ips (
    key_id text NOT NULL,
    hour bigint NOT NULL,
    ip text NOT NULL,
    n bigint NOT NULL
);


--
-- Name: changes seq; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.changes ALTER COLUMN seq SET DEFAULT nextval('public.changes_seq_seq'::regclass);


--
-- Name: events seq; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.events ALTER COLUMN seq SET DEFAULT nextval('public.events_seq_seq'::regclass);


--
-- Data for Name: changes; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.changes (seq, digest, at) FROM stdin;
1	\\xe5403e7c784e3cc2464bb21fbfcd44d47a4900830c3cd57fe948ecd128bd31c3	1796097019110969966
2	\\xe472c289c406c2dec3b3ed608316f7a6004379c38a183c0f558a034ea43993a1	1796097019209761455
3	\\x941d92927ef01e1505c96f1527e982b112d3f6e0867fa01d49e0e4e5f92b8421	1796097019375702869
4	\\x762a7c6f06214c3aa8cdb8f5cf0e391cafd18e58af5ee68f7028834d6bdbae4a	1796097019553697122
5	\\xdb1c9bffa90c5085f6142020d36bc865ef11a82c96d9fc373d5ae1daa842dbac	1796097019720178189
6	\\x941d92927ef01e1505c96f1527e982b112d3f6e0867fa01d49e0e4e5f92b8421	1796097020635499430
7	\\x762a7c6f06214c3aa8cdb8f5cf0e391cafd18e58af5ee68f7028834d6bdbae4a	1796097020700442901
8	\\x090b53d760c42ee9594c1fd0d068df8ba76021e13072b3c712cae2f441425ee7	1796097020700670353
9	\\xdb1c9bffa90c5085f6142020d36bc865ef11a82c96d9fc373d5ae1daa842dbac	1796097020847612648
\.


--
-- Data for Name: events; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.events (seq, at, action, key_id, actor, reason, detail) FROM stdin;
1	1796097019109147418	issued	key_ib9wT7QrleolceSV	cli root@vm		
2	1796097019206989261	issued	key_n5ZqljXlvKgts0vE	cli root@vm		
3	1796097019374287427	issued	key_CHWXRXTAWxMPzwD7	cli root@vm		
4	1796097019553043237	issued	key_ahCtbezGeWiWoE4o	cli root@vm		
5	1796097019719220716	issued	key_mkNa9lERjIsIuh4H	cli root@vm		
6	1796097020635881350	revoked	key_CHWXRXTAWxMPzwD7	cli root@vm	pasted in a support ticket	
7	1796097020699608528	rotated	key_ahCtbezGeWiWoE4o	cli root@vm		new key key_MCi9aY2ZGLpV7JUr; old key valid until 2026-12-01T03:50:22Z
8	1796097020847855863	disabled	key_mkNa9lERjIsIuh4H	cli root@vm		
\.


--
-- Data for Name: keys; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.keys (id, digest, hint, name, owner, env, scopes, rate, burst, allowed_ips, sender_domains, quota, max_recipients, allow_on_behalf_of, created_at, expires_at, revoked_at, revoke_reason, disabled, last_used_at, last_ip, rotated_from, rotated_to) FROM stdin;
key_ahCtbezGeWiWoE4o	\\x762a7c6f06214c3aa8cdb8f5cf0e391cafd18e58af5ee68f7028834d6bdbae4a	kg_live_4kuEjPx9…	shop	shop	live	["mail.send"]	\N	0	[]	[]	\N	0	f	1796097019553043237	1796097022699608528	\N		f	\N			key_MCi9aY2ZGLpV7JUr
key_mkNa9lERjIsIuh4H	\\xdb1c9bffa90c5085f6142020d36bc865ef11a82c96d9fc373d5ae1daa842dbac	kg_live_58LNo9wf…	analytics	data	live	["templates.read"]	\N	0	[]	[]	\N	0	f	1796097019719220716	\N	\N		t	\N			
key_CHWXRXTAWxMPzwD7	\\x941d92927ef01e1505c96f1527e982b112d3f6e0867fa01d49e0e4e5f92b8421	kg_live_YKCkrn8N…	contractor	sales	live	["mail.send"]	\N	0	[]	[]	\N	0	f	1796097019374287427	\N	1796097020635089874	pasted in a support ticket	f	1796097020587495636	127.0.0.1		
key_ib9wT7QrleolceSV	\\xe5403e7c784e3cc2464bb21fbfcd44d47a4900830c3cd57fe948ecd128bd31c3	kg_live_lEH6fjpg…	crm-sync	sales	live	["mail.send"]	100/m	0	[]	["example.com"]	1000/d	50	f	1796097019109147418	4070908800000000000	\N		f	1796097020436769670	127.0.0.1		
key_n5ZqljXlvKgts0vE	\\xe472c289c406c2dec3b3ed608316f7a6004379c38a183c0f558a034ea43993a1	kg_test_WnEQt7mT…	ops-tools	ops	test	["*"]	\N	0	["127.0.0.1/32"]	[]	\N	0	f	1796097019206989261	4070908800000000000	\N		f	1796097020445847785	127.0.0.1		
key_MCi9aY2ZGLpV7JUr	\\x090b53d760c42ee9594c1fd0d068df8ba76021e13072b3c712cae2f441425ee7	kg_live_5TWejGhY…	shop	shop	live	["mail.send"]	\N	0	[]	[]	\N	0	f	1796097020699608528	\N	\N		f	1796097022816669829	127.0.0.1	key_ahCtbezGeWiWoE4o	
\.


--
-- Data for Name: schema_migrations; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.schema_migrations (version, applied_at) FROM stdin;
1	1796097019103028412
\.


--
-- Data for Name: usage; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.usage (key_id, hour, metric, n) FROM stdin;
key_CHWXRXTAWxMPzwD7	1796094000000000000	allowed	1
key_CHWXRXTAWxMPzwD7	1796094000000000000	recipients	1
key_CHWXRXTAWxMPzwD7	1796094000000000000	status.2xx	1
key_ib9wT7QrleolceSV	1796094000000000000	allowed	3
key_ib9wT7QrleolceSV	1796094000000000000	recipients	6
key_ib9wT7QrleolceSV	1796094000000000000	status.2xx	3
key_n5ZqljXlvKgts0vE	1796094000000000000	allowed	1
key_n5ZqljXlvKgts0vE	1796094000000000000	status.2xx	1
key_CHWXRXTAWxMPzwD7	1796094000000000000	denied.revoked_key	1
key_CHWXRXTAWxMPzwD7	1796094000000000000	status.4xx	1
key_MCi9aY2ZGLpV7JUr	1796094000000000000	allowed	2
key_MCi9aY2ZGLpV7JUr	1796094000000000000	recipients	2
key_MCi9aY2ZGLpV7JUr	1796094000000000000	status.2xx	2
key_mkNa9lERjIsIuh4H	1796094000000000000	denied.disabled_key	1
key_mkNa9lERjIsIuh4H	1796094000000000000	status.4xx	1
\.


--
-- Data for Name: usage_ips; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.usage_ips (key_id, hour, ip, n) FROM stdin;
key_ib9wT7QrleolceSV	1796094000000000000	127.0.0.1	3
key_n5ZqljXlvKgts0vE	1796094000000000000	127.0.0.1	1
key_CHWXRXTAWxMPzwD7	1796094000000000000	127.0.0.1	2
key_MCi9aY2ZGLpV7JUr	1796094000000000000	127.0.0.1	2
key_mkNa9lERjIsIuh4H	1796094000000000000	127.0.0.1	1
\.


--
-- Name: changes_seq_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.changes_seq_seq', 9, true);


--
-- Name: events_seq_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.events_seq_seq', 8, true);


--
-- Name: changes changes_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.changes
    ADD CONSTRAINT changes_pkey PRIMARY KEY (seq);


--
-- Name: events events_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.events
    ADD CONSTRAINT events_pkey PRIMARY KEY (seq);


--
-- Name: keys keys_digest_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.keys
    ADD CONSTRAINT keys_digest_key UNIQUE (digest);


--
-- Name: keys keys_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.keys
    ADD CONSTRAINT keys_pkey PRIMARY KEY (id);


--
-- Name: schema_migrations schema_migrations_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.schema_migrations
    ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (version);


--
-- Name: usage_ips usage_ips_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.usage_ips
    ADD CONSTRAINT usage_ips_pkey PRIMARY KEY (key_id, hour, ip);


--
-- Name: usage usage_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.usage
    ADD CONSTRAINT usage_pkey PRIMARY KEY (key_id, hour, metric);


--
-- Name: events_key_id; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX events_key_id ON public.events USING btree (key_id, seq);


--
-- Name: keys_created_at; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX keys_created_at ON public.keys USING btree (created_at);


--
-- Name: keys_owner; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX keys_owner ON public.keys USING btree (owner, created_at);


--
-- PostgreSQL database dump complete
--

\unrestrict GDf4m9lxGYFfY99olqtak2ZfykUhxI8VPhpthctz9IIRLxzCkjpkANC6XvCiwnJ

