"""A minimal OpenAI-compatible images-edit server for the ``openai_images`` tests, on a 127.0.0.1 port.

``POST /v1/images/edits`` parses the multipart form (text fields, the ``image`` file or the
``image[]`` files) and
answers with ``respond(fields, image)``: a PIL image (sent as ``b64_json``) or a ``Reply`` (any
status and body, after a delay). Everything else is ``ChatServer``'s: ``GET /v1/models``, the
record of every request and its headers, the most requests in flight at once, ``fail_first``.
"""

import base64
import email.parser
import email.policy
import io

from PIL import Image

from tests.chat_server import ChatServer, Reply


def b64_png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


class ImagesServer(ChatServer):
    def __init__(self, respond, fail_first: int = 0, delay_s: float = 0.0):
        super().__init__(respond, model="tiny-images", fail_first=fail_first, delay_s=delay_s)

    def parse(self, raw: bytes, headers) -> dict:
        """The form's text fields, and its ``image`` file decoded (``"image"``) with its part's content type."""
        head = f"Content-Type: {headers['Content-Type']}\r\n\r\n".encode()
        form = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
        fields = {}
        for part in form.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if part.get_filename():
                image = Image.open(io.BytesIO(part.get_payload(decode=True))).convert("RGB")
                if name.endswith("[]"):  # an array of files: every one, in order
                    fields.setdefault(name, []).append(image)
                else:
                    fields[name] = image
                fields[f"{name}.content_type"] = part.get_content_type()
            else:
                fields[name] = part.get_payload(decode=True).decode()
        return fields

    def answer(self, body: dict) -> Reply:
        answer = self.respond(body, body.get("image") or (body.get("image[]") or [None])[0])
        return answer if isinstance(answer, Reply) else Reply({"created": 0, "data": [{"b64_json": b64_png(answer)}]})
