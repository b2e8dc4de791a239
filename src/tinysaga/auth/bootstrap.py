from tinysaga.auth.api import ensure_admin, router
from tinysaga.platform.service import Runtime, create_service_app


async def setup(rt: Runtime) -> None:
    rt.state["private_key"] = (rt.settings.secrets_dir / "jwt_private.pem").read_text()
    await ensure_admin(rt)


app = create_service_app("auth", setup, routers=[router])
