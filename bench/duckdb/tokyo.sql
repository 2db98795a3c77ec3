-- Shared by the reports' SQL: UTC microseconds as mamori shows them (Asia/Tokyo, RFC 3339).

CREATE MACRO tokyo(us) AS (
    CASE WHEN us IS NULL THEN NULL ELSE
        strftime(make_timestamp(us + 32400000000), '%Y-%m-%dT%H:%M:%S')
        || CASE WHEN us % 1000000 = 0 THEN '' ELSE '.' || lpad(CAST(us % 1000000 AS VARCHAR), 6, '0') END
        || '+09:00'
    END
);
