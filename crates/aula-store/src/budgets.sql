-- Admission and settlement of shared budgets as one statement each
-- (PostgreSQL only; the rules are budgets.rs's, which runs the same steps
-- as separate statements on SQLite). Installed at every start under an
-- advisory lock (CREATE OR REPLACE: the newest gateway's version wins).

-- holds: 'counter:start_ms:limit:amount;...' in the counters' order.
-- Returns (-1, 0, 0) when every hold was taken and the reservation written,
-- else (counter, used, reserved) of the first window without room, with
-- nothing taken.
CREATE OR REPLACE FUNCTION aula_reserve(
    p_id TEXT, p_gateway TEXT, p_user TEXT, p_holds TEXT, p_expires BIGINT)
RETURNS TABLE (refused BIGINT, w_used BIGINT, w_reserved BIGINT)
LANGUAGE plpgsql AS $fn$
DECLARE
    h TEXT;
    c BIGINT; st BIGINT; lim BIGINT; amt BIGINT;
    u BIGINT; r BIGINT; seed BIGINT;
    kept TEXT := '';
BEGIN
    BEGIN
        FOREACH h IN ARRAY string_to_array(p_holds, ';') LOOP
            c := split_part(h, ':', 1)::BIGINT;
            st := split_part(h, ':', 2)::BIGINT;
            lim := split_part(h, ':', 3)::BIGINT;
            amt := split_part(h, ':', 4)::BIGINT;
            UPDATE budget_windows w SET reserved = w.reserved + amt
             WHERE w.user_name = p_user AND w.counter = c AND w.start_ms = st
               AND w.used + w.reserved + amt <= lim;
            IF NOT FOUND THEN
                SELECT w.used, w.reserved INTO u, r FROM budget_windows w
                 WHERE w.user_name = p_user AND w.counter = c AND w.start_ms = st;
                IF NOT FOUND THEN
                    -- A window not seen before: seeded from the ledger.
                    seed := 0;
                    IF c >= 3 THEN
                        SELECT COALESCE(SUM(COALESCE(q.prompt_tokens, 0) + COALESCE(q.completion_tokens, 0)), 0)
                          INTO seed FROM requests q
                         WHERE q.user_name = p_user AND q.admitted_ms >= st;
                    END IF;
                    INSERT INTO budget_windows (user_name, counter, start_ms, used, reserved)
                    VALUES (p_user, c, st, seed, 0) ON CONFLICT DO NOTHING;
                    UPDATE budget_windows w SET reserved = w.reserved + amt
                     WHERE w.user_name = p_user AND w.counter = c AND w.start_ms = st
                       AND w.used + w.reserved + amt <= lim;
                    IF NOT FOUND THEN
                        SELECT w.used, w.reserved INTO u, r FROM budget_windows w
                         WHERE w.user_name = p_user AND w.counter = c AND w.start_ms = st;
                        RAISE EXCEPTION USING ERRCODE = 'P0A01';
                    END IF;
                ELSE
                    RAISE EXCEPTION USING ERRCODE = 'P0A01';
                END IF;
            END IF;
            kept := kept || CASE WHEN kept = '' THEN '' ELSE ';' END || c || ':' || st || ':' || amt;
        END LOOP;
        INSERT INTO budget_reservations (id, gateway, user_name, holds, expires_ms)
        VALUES (p_id, p_gateway, p_user, kept, p_expires);
    EXCEPTION WHEN SQLSTATE 'P0A01' THEN
        -- Everything this block took is undone.
        RETURN QUERY SELECT c, COALESCE(u, 0), COALESCE(r, 0);
        RETURN;
    END;
    RETURN QUERY SELECT -1::BIGINT, 0::BIGINT, 0::BIGINT;
END
$fn$;

-- End reservation p_id: its holds leave `reserved`; `used` gains p_tokens
-- for token counters (p_tokens < 0: the whole hold, a lease that ran out),
-- 1 for requests per minute, 0 for concurrency. False when already settled.
CREATE OR REPLACE FUNCTION aula_settle(p_id TEXT, p_tokens BIGINT)
RETURNS BOOLEAN
LANGUAGE plpgsql AS $fn$
DECLARE
    v_user TEXT; v_holds TEXT; h TEXT;
    c BIGINT; st BIGINT; amt BIGINT; add BIGINT;
BEGIN
    DELETE FROM budget_reservations WHERE id = p_id RETURNING user_name, holds INTO v_user, v_holds;
    IF NOT FOUND THEN
        RETURN FALSE;
    END IF;
    IF v_holds = '' THEN
        RETURN TRUE;
    END IF;
    FOREACH h IN ARRAY string_to_array(v_holds, ';') LOOP
        c := split_part(h, ':', 1)::BIGINT;
        st := split_part(h, ':', 2)::BIGINT;
        amt := split_part(h, ':', 3)::BIGINT;
        add := CASE WHEN c = 0 THEN 0 WHEN c = 1 THEN 1
                    WHEN p_tokens < 0 THEN amt ELSE p_tokens END;
        UPDATE budget_windows w SET
            reserved = CASE WHEN w.reserved > amt THEN w.reserved - amt ELSE 0 END,
            used = w.used + add
         WHERE w.user_name = v_user AND w.counter = c AND w.start_ms = st;
    END LOOP;
    RETURN TRUE;
END
$fn$;
