"""`emailInboxes` as a frontend lists and searches: what each filter matches, how the page and
its `totalCount` relate, and that a search term is text, never a pattern."""

from __future__ import annotations

from tests.schema.fragments import CREATE, LIST, minimal_input
from tests.schema.test_inbox_updates import mark_verified


async def create(tenant, email: str, **extra: object) -> str:
    response = await tenant.client(CREATE, {"input": minimal_input(email, **extra)})
    payload = response.data["createEmailInbox"]
    assert payload["__typename"] == "CreateEmailInboxSuccess", payload
    return str(payload["inbox"]["id"])


async def listed(tenant, flt: dict[str, object], first: int = 50) -> tuple[list[str], int]:
    """The emails a filter lists (one page, in order) and the filter's totalCount."""
    response = await tenant.client(LIST, {"first": first, "filter": flt})
    assert not response.errors, response.errors
    page = response.data["emailInboxes"]
    return [edge["node"]["email"] for edge in page["edges"]], page["totalCount"]


async def emails(tenant, flt: dict[str, object]) -> list[str]:
    found, total = await listed(tenant, flt)
    assert total == len(found), (flt, found, total)
    return sorted(found)


async def test_search_characters_match_literally(tenant):
    # LIKE's wildcards (% and _) and its escape character (\) are ordinary characters in a
    # search: "50%" must not find "500 leads", "a_b" must not find "axb".
    names = {
        "pct@example.com": "50% off",
        "digits@example.com": "500 leads",
        "under@example.com": "a_b team",
        "any@example.com": "axb team",
        "slash@example.com": "back\\slash",
        "noslash@example.com": "backslash",
        "esc@example.com": "back\\%done",
    }
    for email, name in names.items():
        await create(tenant, email, name=name)

    assert await emails(tenant, {"search": "50%"}) == ["pct@example.com"]
    assert await emails(tenant, {"search": "%"}) == ["esc@example.com", "pct@example.com"]
    assert await emails(tenant, {"search": "a_b"}) == ["under@example.com"]
    assert await emails(tenant, {"search": "_"}) == ["under@example.com"]
    assert await emails(tenant, {"search": "\\"}) == ["esc@example.com", "slash@example.com"]
    assert await emails(tenant, {"search": "k\\s"}) == ["slash@example.com"]
    assert await emails(tenant, {"search": "k\\%"}) == ["esc@example.com"]
    assert await emails(tenant, {"search": "backslash"}) == ["noslash@example.com"]


async def test_search_looks_at_name_email_and_display_name_ignoring_case(tenant):
    await create(tenant, "plain-one@example.com", name="Quarterly Mailing", displayName="Ann")
    await create(tenant, "zebra-desk@example.com", name="Second", displayName="Bob")
    await create(tenant, "plain-three@example.com", name="Third", displayName="Carol Kestrel")

    assert await emails(tenant, {"search": "QUARTERLY"}) == ["plain-one@example.com"]
    assert await emails(tenant, {"search": "Zebra"}) == ["zebra-desk@example.com"]
    assert await emails(tenant, {"search": "kestrel"}) == ["plain-three@example.com"]
    assert await emails(tenant, {"search": "plain"}) == [
        "plain-one@example.com",
        "plain-three@example.com",
    ]
    assert await emails(tenant, {"search": "nowhere"}) == []
    # An empty search is no search.
    assert len(await emails(tenant, {"search": ""})) == 3


async def test_status_department_tag_and_active_filters_combine(tenant, db):
    ids = {}
    for email, department, tags, active in (
        ("a@example.com", "sales", ["vip", "eu"], True),
        ("b@example.com", "sales", ["eu"], False),
        ("c@example.com", "support", ["vip"], True),
        ("d@example.com", "sales-east", ["vips"], True),
        ("e@example.com", None, [], True),
    ):
        extra: dict[str, object] = {"tags": tags, "active": active}
        if department:
            extra["department"] = department
        ids[email] = await create(tenant, email, **extra)
    for email in ("a@example.com", "c@example.com"):
        await mark_verified(db, ids[email])

    # Department and tag match whole values, not substrings or patterns.
    assert await emails(tenant, {"department": "sales"}) == ["a@example.com", "b@example.com"]
    assert await emails(tenant, {"department": "sale%"}) == []
    assert await emails(tenant, {"tag": "vip"}) == ["a@example.com", "c@example.com"]
    assert await emails(tenant, {"tag": "vi"}) == []
    assert await emails(tenant, {"status": "ACTIVE"}) == ["a@example.com", "c@example.com"]
    assert await emails(tenant, {"status": "PENDING"}) == [
        "b@example.com",
        "d@example.com",
        "e@example.com",
    ]
    assert await emails(tenant, {"active": True}) == [
        "a@example.com",
        "c@example.com",
        "d@example.com",
        "e@example.com",
    ]
    # Filters given together must all hold.
    assert await emails(tenant, {"department": "sales", "tag": "vip"}) == ["a@example.com"]
    assert await emails(tenant, {"tag": "eu", "active": False}) == ["b@example.com"]
    assert await emails(tenant, {"status": "ACTIVE", "department": "support"}) == ["c@example.com"]
    assert await emails(tenant, {"status": "ACTIVE", "active": False}) == []
    assert await emails(tenant, {"search": "d@", "tag": "vips", "department": "sales-east"}) == [
        "d@example.com"
    ]


async def test_pages_of_a_filtered_list_keep_its_total_and_its_filter(tenant):
    for i in range(5):
        await create(tenant, f"match{i}@example.com", department="ops")
        await create(tenant, f"other{i}@example.com", department="hr")

    seen: list[str] = []
    after = None
    while True:
        response = await tenant.client(
            LIST, {"first": 2, "after": after, "filter": {"department": "ops"}}
        )
        page = response.data["emailInboxes"]
        # Every page counts the whole filtered list, not what is left after the cursor.
        assert page["totalCount"] == 5
        assert 1 <= len(page["edges"]) <= 2
        seen += [edge["node"]["email"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == [f"match{i}@example.com" for i in range(5)]


async def test_page_size_limits(tenant):
    for i in range(3):
        await create(tenant, f"p{i}@example.com")

    async def page(first: int) -> dict[str, object]:
        response = await tenant.client(LIST, {"first": first})
        assert not response.errors, response.errors
        return response.data["emailInboxes"]

    empty = await page(0)
    assert empty["edges"] == [] and empty["totalCount"] == 3
    assert empty["pageInfo"]["hasNextPage"] is True

    short = await page(2)
    assert len(short["edges"]) == 2 and short["pageInfo"]["hasNextPage"] is True
    exact = await page(3)
    assert len(exact["edges"]) == 3 and exact["pageInfo"]["hasNextPage"] is False
    roomy = await page(100)  # the largest page allowed
    assert len(roomy["edges"]) == 3 and roomy["pageInfo"]["hasNextPage"] is False

    for refused in (101, -1):
        response = await tenant.client(LIST, {"first": refused})
        assert response.error_codes() == ["BAD_USER_INPUT"], refused
        assert "first" in response.errors[0]["message"]
