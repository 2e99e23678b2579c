"""The MCP server: app.py serves the API functions as MCP tools at /gradio_api/mcp/,
driven here with the `mcp` Python client (streamable HTTP) against the real server."""

from __future__ import annotations

import asyncio
import base64
import io
import re
import urllib.error
import urllib.request

from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client
from PIL import Image

from aigc_studio.recipe import read_recipe
from tests.live_server import running_app

TOOLS = {"generate_text", "compare_text", "explain_next_token", "perplexity", "attention", "generate_image",
         "compare_image", "image_grid", "generate_audio", "compare_audio"}


async def _session(url: str, work):
    async with streamablehttp_client(url + "gradio_api/mcp/") as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            return await work(session)


def mcp(url: str, work):
    return asyncio.run(_session(url, work))


def test_tools_are_listed_with_descriptions_and_typed_parameters(app_server):
    assert urllib.request.urlopen(app_server[0] + "gradio_api/mcp/schema", timeout=30).status == 200  # on by default
    tools = mcp(app_server[0], lambda session: session.list_tools())
    by_name = {tool.name: tool for tool in tools.tools}
    assert TOOLS <= set(by_name)
    image = by_name["generate_image"]
    assert "recipe" in image.description and "denoising" in image.description
    properties = image.inputSchema["properties"]
    assert list(properties)[:4] == ["prompt", "negative_prompt", "steps", "guidance"]
    assert "1-150" in properties["steps"]["description"]  # the docstring's range reaches the tool
    assert image.inputSchema["required"] == ["prompt"]
    text = by_name["generate_text"].inputSchema["properties"]
    assert {"temperature", "top_k", "top_p", "seed", "prompt_mode"} <= set(text)


def test_the_image_tool_returns_a_png_with_its_recipe(app_server, tmp_path):
    url = app_server[0]
    result = mcp(url, lambda session: session.call_tool("generate_image", {"prompt": "a red circle", "steps": 6,
                                                                          "seed": 21}))
    assert not result.isError, result.content
    pictures = [c for c in result.content if c.type == "image"]
    assert len(pictures) == 1 and pictures[0].mimeType == "image/png"
    with Image.open(io.BytesIO(base64.b64decode(pictures[0].data))) as picture:
        assert picture.size == (256, 256)
    # the image content is re-encoded by Gradio; the URL serves the studio's own PNG, recipe included
    link = next(re.search(r"https?://\S+", c.text).group(0) for c in result.content if c.type == "text")
    path = tmp_path / "from-mcp.png"
    path.write_bytes(urllib.request.urlopen(link, timeout=30).read())
    recipe = read_recipe(path)
    assert (recipe.model_id, recipe.prompt, recipe.params["seed"], recipe.params["steps"]) == \
        ("shapes-diffusion", "a red circle", 21, 6)


def test_text_tools_answer_and_bad_input_names_the_field(app_server):
    async def work(session):
        answer = await session.call_tool("generate_text", {"prompt": "The capital of France is", "greedy": True,
                                                           "prompt_mode": "completion", "stop_sequences": ".",
                                                           "max_new_tokens": 8})
        score = await session.call_tool("perplexity", {"text": "The cat sat on the mat."})
        bad = await session.call_tool("generate_text", {"prompt": "hi", "top_k": 5000})
        return answer, score, bad

    answer, score, bad = mcp(app_server[0], work)
    assert answer.content[0].text.strip() == "Paris"
    assert float(score.content[0].text) > 1.0
    assert bad.isError and "top_k: must be a number in [0, 1000]" in bad.content[0].text


def test_aigc_mcp_0_turns_the_server_off(tmp_path):
    with running_app(tmp_path / "no-mcp", AIGC_MCP="0") as url:
        try:
            status = urllib.request.urlopen(url + "gradio_api/mcp/schema", timeout=30).status
        except urllib.error.HTTPError as error:
            status = error.code
        assert status == 404
        assert urllib.request.urlopen(url + "config", timeout=30).status == 200  # the app itself serves
